"""A generic (augmented) red-black tree, rebalancing step for step like ``lib/rbtree.c``.

Invariant kept (the classic five): every node is red or black; the root is black;
NULL leaves are black; a red node has no red child; every path from a node down to
its leaves has the same number of black nodes.

Why not any balanced tree: the vmap allocator's free-space search walks this tree,
and when alignment inflates the search length the *shape* decides which free block is
found. So insertion (fix-up cases 1 colour flip / 2 rotate at parent / 3 rotate at
grandparent) and erase (in-order successor, four-case ``__rb_erase_color``) mirror the
kernel's exactly, and so do the augmented callbacks:

* ``rotate(old, new)`` — after a rotation ``new`` took ``old``'s place: ``new`` gets
  ``old``'s augmented value, ``old`` is recomputed from its children;
* ``copy(old, new)`` — ``new`` replaces ``old`` in erase: copy the value;
* ``propagate(node, stop)`` — walk up recomputing, stopping at ``stop`` or at the
  first node whose value does not change.

Like the kernel, nodes are embedded: a class that wants to live in a tree subclasses
:class:`RBNode` (which only adds four slots); the tree never allocates.

Usage, as in the kernel: find the link position yourself, :func:`rb_link_node`, then
:func:`rb_insert_color` (or :func:`rb_insert_augmented`)::

    >>> class N(RBNode):
    ...     __slots__ = ("key",)
    ...     def __init__(self, key): super().__init__(); self.key = key
    >>> root = RBRoot()
    >>> for k in (3, 1, 2):
    ...     parent, left, node = None, False, root.rb_node
    ...     while node is not None:
    ...         parent, left = node, k < node.key
    ...         node = node.rb_left if left else node.rb_right
    ...     n = N(k); rb_link_node(n, parent, left, root); rb_insert_color(n, root)
    >>> [n.key for n in rb_inorder(root)], root.rb_node.key
    ([1, 2, 3], 2)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from pyvmalloc._accel import speedups as _speedups

__all__ = [
    "Augment",
    "RBNode",
    "RBRoot",
    "RBTreeError",
    "rb_build",
    "rb_erase",
    "rb_erase_augmented",
    "rb_first",
    "rb_inorder",
    "rb_insert_augmented",
    "rb_insert_color",
    "rb_last",
    "rb_link_node",
    "rb_next",
    "rb_prev",
    "validate_rbtree",
]


class RBTreeError(AssertionError):
    """An invariant of the tree is broken; the message names the node."""


class RBNode:
    """The embedded ``struct rb_node``: parent, children and colour.

    The kernel packs parent and colour in one word; the model keeps them apart.
    """

    __slots__ = ("rb_left", "rb_parent", "rb_red", "rb_right")

    def __init__(self) -> None:
        self.rb_parent: Any = None
        self.rb_left: Any = None
        self.rb_right: Any = None
        self.rb_red = False


class RBRoot:
    """``struct rb_root``: just the root pointer."""

    __slots__ = ("rb_node",)

    def __init__(self) -> None:
        self.rb_node: Any = None

    def __bool__(self) -> bool:
        return self.rb_node is not None

    def __iter__(self) -> Iterator[Any]:
        return rb_inorder(self)

    def __repr__(self) -> str:
        n = self.rb_node
        return "<rb_root empty>" if n is None else f"<rb_root of {n!r}>"


class Augment(Protocol):
    """``struct rb_augment_callbacks``."""

    def propagate(self, node: Any, stop: Any) -> None: ...
    def copy(self, old: Any, new: Any) -> None: ...
    def rotate(self, old: Any, new: Any) -> None: ...


def rb_link_node(node: RBNode, parent: RBNode | None, left: bool, root: RBRoot) -> None:
    """``rb_link_node``: hang a new red leaf under ``parent`` (or as the root)."""
    node.rb_parent = parent
    node.rb_left = node.rb_right = None
    node.rb_red = True
    if parent is None:
        root.rb_node = node
    elif left:
        parent.rb_left = node
    else:
        parent.rb_right = node


def _change_child(old: RBNode, new: RBNode | None, parent: RBNode | None, root: RBRoot) -> None:
    """``__rb_change_child``."""
    if parent is None:
        root.rb_node = new
    elif parent.rb_left is old:
        parent.rb_left = new
    else:
        parent.rb_right = new


def _rotate_set_parents(old: RBNode, new: RBNode, root: RBRoot, red: bool) -> None:
    """``__rb_rotate_set_parents``: ``new`` takes ``old``'s parent and colour."""
    parent = old.rb_parent
    new.rb_parent = parent
    new.rb_red = old.rb_red
    old.rb_parent = new
    old.rb_red = red
    _change_child(old, new, parent, root)


def _insert(node: RBNode, root: RBRoot, rotate: Callable[[Any, Any], None] | None) -> None:
    """``__rb_insert``: restore the invariants after linking red ``node``."""
    parent = node.rb_parent
    while True:
        # Loop invariant: node is red.
        if parent is None:
            node.rb_red = False  # node is the root
            return
        if not parent.rb_red:
            return
        gparent = parent.rb_parent
        tmp = gparent.rb_right
        if parent is not tmp:  # parent is gparent's left child
            if tmp is not None and tmp.rb_red:
                # Case 1: red uncle -> colour flips, continue from the grandparent.
                tmp.rb_red = False
                parent.rb_red = False
                node = gparent
                parent = node.rb_parent
                node.rb_red = True
                continue
            tmp = parent.rb_right
            if node is tmp:
                # Case 2: node is a right child -> left rotate at parent.
                tmp = node.rb_left
                parent.rb_right = tmp
                node.rb_left = parent
                if tmp is not None:
                    tmp.rb_parent = parent
                    tmp.rb_red = False
                parent.rb_parent = node
                parent.rb_red = True
                if rotate is not None:
                    rotate(parent, node)
                parent = node
                tmp = node.rb_right
            # Case 3: node is a left child -> right rotate at gparent.
            gparent.rb_left = tmp
            parent.rb_right = gparent
            if tmp is not None:
                tmp.rb_parent = gparent
                tmp.rb_red = False
            _rotate_set_parents(gparent, parent, root, True)
            if rotate is not None:
                rotate(gparent, parent)
            return
        else:
            tmp = gparent.rb_left
            if tmp is not None and tmp.rb_red:
                # Case 1 (mirrored).
                tmp.rb_red = False
                parent.rb_red = False
                node = gparent
                parent = node.rb_parent
                node.rb_red = True
                continue
            tmp = parent.rb_left
            if node is tmp:
                # Case 2 (mirrored): right rotate at parent.
                tmp = node.rb_right
                parent.rb_left = tmp
                node.rb_right = parent
                if tmp is not None:
                    tmp.rb_parent = parent
                    tmp.rb_red = False
                parent.rb_parent = node
                parent.rb_red = True
                if rotate is not None:
                    rotate(parent, node)
                parent = node
                tmp = node.rb_left
            # Case 3 (mirrored): left rotate at gparent.
            gparent.rb_right = tmp
            parent.rb_left = gparent
            if tmp is not None:
                tmp.rb_parent = gparent
                tmp.rb_red = False
            _rotate_set_parents(gparent, parent, root, True)
            if rotate is not None:
                rotate(gparent, parent)
            return


def rb_insert_color(node: RBNode, root: RBRoot) -> None:
    """``rb_insert_color``: rebalance after :func:`rb_link_node`."""
    _insert(node, root, None)


def rb_insert_augmented(node: RBNode, root: RBRoot, augment: Augment) -> None:
    """``rb_insert_augmented``: rebalance, keeping augmented values through rotations.

    As in the kernel, the caller must have propagated the new node's value (or must
    propagate it afterwards); rotations only move values around.
    """
    _insert(node, root, augment.rotate)


def _erase_color(parent: RBNode, root: RBRoot, rotate: Callable[[Any, Any], None] | None) -> None:
    """``____rb_erase_color``: fix a black-height deficit below ``parent``."""
    node: RBNode | None = None
    while True:
        # Loop invariant: node is black (or None on the first pass) and not the root;
        # paths through parent and node have one black node fewer than the others.
        sibling = parent.rb_right
        if node is not sibling:  # node is parent's left child
            if sibling.rb_red:
                # Case 1: red sibling -> left rotate at parent.
                tmp1 = sibling.rb_left
                parent.rb_right = tmp1
                sibling.rb_left = parent
                tmp1.rb_parent = parent
                tmp1.rb_red = False
                _rotate_set_parents(parent, sibling, root, True)
                if rotate is not None:
                    rotate(parent, sibling)
                sibling = tmp1
            tmp1 = sibling.rb_right
            if tmp1 is None or not tmp1.rb_red:
                tmp2 = sibling.rb_left
                if tmp2 is None or not tmp2.rb_red:
                    # Case 2: sibling colour flip (both nephews black).
                    sibling.rb_parent = parent
                    sibling.rb_red = True
                    if parent.rb_red:
                        parent.rb_red = False
                    else:
                        node = parent
                        parent = node.rb_parent
                        if parent is not None:
                            continue
                    return
                # Case 3: right rotate at sibling.
                tmp1 = tmp2.rb_right
                sibling.rb_left = tmp1
                tmp2.rb_right = sibling
                parent.rb_right = tmp2
                if tmp1 is not None:
                    tmp1.rb_parent = sibling
                    tmp1.rb_red = False
                if rotate is not None:
                    rotate(sibling, tmp2)
                tmp1 = sibling
                sibling = tmp2
            # Case 4: left rotate at parent + colour flips.
            tmp2 = sibling.rb_left
            parent.rb_right = tmp2
            sibling.rb_left = parent
            tmp1.rb_parent = sibling
            tmp1.rb_red = False
            if tmp2 is not None:
                tmp2.rb_parent = parent
            _rotate_set_parents(parent, sibling, root, False)
            if rotate is not None:
                rotate(parent, sibling)
            return
        else:
            sibling = parent.rb_left
            if sibling.rb_red:
                # Case 1 (mirrored): right rotate at parent.
                tmp1 = sibling.rb_right
                parent.rb_left = tmp1
                sibling.rb_right = parent
                tmp1.rb_parent = parent
                tmp1.rb_red = False
                _rotate_set_parents(parent, sibling, root, True)
                if rotate is not None:
                    rotate(parent, sibling)
                sibling = tmp1
            tmp1 = sibling.rb_left
            if tmp1 is None or not tmp1.rb_red:
                tmp2 = sibling.rb_right
                if tmp2 is None or not tmp2.rb_red:
                    # Case 2 (mirrored).
                    sibling.rb_parent = parent
                    sibling.rb_red = True
                    if parent.rb_red:
                        parent.rb_red = False
                    else:
                        node = parent
                        parent = node.rb_parent
                        if parent is not None:
                            continue
                    return
                # Case 3 (mirrored): left rotate at sibling.
                tmp1 = tmp2.rb_left
                sibling.rb_right = tmp1
                tmp2.rb_left = sibling
                parent.rb_left = tmp2
                if tmp1 is not None:
                    tmp1.rb_parent = sibling
                    tmp1.rb_red = False
                if rotate is not None:
                    rotate(sibling, tmp2)
                tmp1 = sibling
                sibling = tmp2
            # Case 4 (mirrored): right rotate at parent + colour flips.
            tmp2 = sibling.rb_right
            parent.rb_left = tmp2
            sibling.rb_right = parent
            tmp1.rb_parent = sibling
            tmp1.rb_red = False
            if tmp2 is not None:
                tmp2.rb_parent = parent
            _rotate_set_parents(parent, sibling, root, False)
            if rotate is not None:
                rotate(parent, sibling)
            return


def _erase(node: RBNode, root: RBRoot, augment: Augment | None) -> RBNode | None:
    """``__rb_erase_augmented``: unlink ``node``; return where rebalancing must start."""
    child = node.rb_right
    tmp = node.rb_left
    rebalance: RBNode | None
    if tmp is None:
        # Case 1: at most one child (the right one). If it exists it is red and node
        # black, so recolouring it locally is enough.
        parent = node.rb_parent
        _change_child(node, child, parent, root)
        if child is not None:
            child.rb_parent = parent
            child.rb_red = node.rb_red
            rebalance = None
        else:
            rebalance = parent if not node.rb_red else None
        tmp = parent
    elif child is None:
        # Still case 1, the child being the left one.
        parent = node.rb_parent
        tmp.rb_parent = parent
        tmp.rb_red = node.rb_red
        _change_child(node, tmp, parent, root)
        rebalance = None
        tmp = parent
    else:
        successor = child
        tmp = child.rb_left
        if tmp is None:
            # Case 2: the successor is node's right child.
            parent = successor
            child2 = successor.rb_right
            if augment is not None:
                augment.copy(node, successor)
        else:
            # Case 3: the successor is the leftmost node under node's right child.
            while True:
                parent = successor
                successor = tmp
                tmp = tmp.rb_left
                if tmp is None:
                    break
            child2 = successor.rb_right
            parent.rb_left = child2
            successor.rb_right = child
            child.rb_parent = successor
            if augment is not None:
                augment.copy(node, successor)
                augment.propagate(parent, successor)
        tmp = node.rb_left
        successor.rb_left = tmp
        tmp.rb_parent = successor
        nparent = node.rb_parent
        _change_child(node, successor, nparent, root)
        if child2 is not None:
            successor.rb_parent = nparent
            successor.rb_red = node.rb_red
            child2.rb_parent = parent
            child2.rb_red = False
            rebalance = None
        else:
            was_red = successor.rb_red
            successor.rb_parent = nparent
            successor.rb_red = node.rb_red
            rebalance = parent if not was_red else None
        tmp = successor
    if augment is not None:
        augment.propagate(tmp, None)
    return rebalance


def rb_erase(node: RBNode, root: RBRoot) -> None:
    """``rb_erase``: unlink ``node`` and rebalance."""
    rebalance = _erase(node, root, None)
    if rebalance is not None:
        _erase_color(rebalance, root, None)


def rb_erase_augmented(node: RBNode, root: RBRoot, augment: Augment) -> None:
    """``rb_erase_augmented``: unlink, propagate, then rebalance with ``rotate``."""
    rebalance = _erase(node, root, augment)
    if rebalance is not None:
        _erase_color(rebalance, root, augment.rotate)


# --- iteration --------------------------------------------------------------------


def rb_first(root: RBRoot) -> Any:
    """Leftmost node, or None."""
    n = root.rb_node
    if n is None:
        return None
    while n.rb_left is not None:
        n = n.rb_left
    return n


def rb_last(root: RBRoot) -> Any:
    """Rightmost node, or None."""
    n = root.rb_node
    if n is None:
        return None
    while n.rb_right is not None:
        n = n.rb_right
    return n


def rb_next(node: RBNode) -> Any:
    """In-order successor (``rb_next``), or None."""
    n = node.rb_right
    if n is not None:
        while n.rb_left is not None:
            n = n.rb_left
        return n
    parent = node.rb_parent
    while parent is not None and node is parent.rb_right:
        node = parent
        parent = node.rb_parent
    return parent


def rb_prev(node: RBNode) -> Any:
    """In-order predecessor (``rb_prev``), or None."""
    n = node.rb_left
    if n is not None:
        while n.rb_right is not None:
            n = n.rb_right
        return n
    parent = node.rb_parent
    while parent is not None and node is parent.rb_left:
        node = parent
        parent = node.rb_parent
    return parent


def rb_inorder(root: RBRoot) -> Iterator[Any]:
    """All nodes in ascending order (safe against nothing: don't modify meanwhile)."""
    n = rb_first(root)
    while n is not None:
        yield n
        n = rb_next(n)


def rb_build(
    root: RBRoot,
    nodes: Sequence[RBNode],
    top: int | None,
    children: Sequence[tuple[int | None, int | None]],
    black: Sequence[bool],
) -> None:
    """Link ``nodes`` into exactly the given shape: ``children[i]`` are the indices of
    node ``i``'s left and right child, ``black[i]`` its colour, ``top`` the root.

    No rotation, no recolouring: this copies a tree read from a kernel (see
    :mod:`pyvmalloc.trace.kstate`), which was built by the kernel's own fix-ups over
    its history. The caller recomputes augmented values and validates the result
    (:func:`validate_rbtree`); a shape that is not a tree is refused here.
    """
    if root.rb_node is not None:
        raise RBTreeError("rb_build: the tree is not empty")
    for n, b in zip(nodes, black, strict=True):
        n.rb_parent = n.rb_left = n.rb_right = None
        n.rb_red = not b
    for i, (left, right) in enumerate(children):
        n = nodes[i]
        for child, is_left in ((left, True), (right, False)):
            if child is None:
                continue
            c = nodes[child]
            if c.rb_parent is not None or child in (top, i):
                raise RBTreeError(f"rb_build: node {child} has two parents")
            c.rb_parent = n
            if is_left:
                n.rb_left = c
            else:
                n.rb_right = c
    if top is not None:
        root.rb_node = nodes[top]


# --- validation ---------------------------------------------------------------------


def validate_rbtree(
    root: RBRoot,
    key: Callable[[Any], Any],
    *,
    augmented: Callable[[Any], Any] | None = None,
    compute: Callable[[Any], Any] | None = None,
    name: Callable[[Any], str] = repr,
    allow_equal: bool = False,
) -> int:
    """Check order, colours, black height, parent links and augmented values.

    ``key(node)`` orders nodes; with ``augmented``/``compute`` given, each node's stored
    value ``augmented(node)`` must equal ``compute(node)`` from its children. Raises
    :class:`RBTreeError` naming the broken node; returns the number of nodes.
    """
    top = root.rb_node
    if top is None:
        return 0
    if top.rb_parent is not None:
        raise RBTreeError(f"root {name(top)} has a parent")
    if top.rb_red:
        raise RBTreeError(f"root {name(top)} is red")
    count = 0
    black_height = -1
    prev: Any = None
    # Iterative in-order walk carrying the black depth of each node.
    stack: list[tuple[Any, int]] = []
    node, depth = top, 0
    while stack or node is not None:
        while node is not None:
            d = depth + (0 if node.rb_red else 1)
            for child in (node.rb_left, node.rb_right):
                if child is not None and child.rb_parent is not node:
                    raise RBTreeError(
                        f"{name(child)} has a wrong parent link (expected {name(node)})"
                    )
                if child is not None and node.rb_red and child.rb_red:
                    raise RBTreeError(f"red {name(node)} has a red child {name(child)}")
            if node.rb_left is None or node.rb_right is None:
                if black_height < 0:
                    black_height = d
                elif d != black_height:
                    raise RBTreeError(
                        f"black height {d} at {name(node)} differs from {black_height}"
                    )
            stack.append((node, d))
            node, depth = node.rb_left, d
        node, depth = stack.pop()
        count += 1
        if prev is not None:
            a, b = key(prev), key(node)
            if a > b or (a == b and not allow_equal):
                raise RBTreeError(f"order broken: {name(prev)} before {name(node)}")
        if augmented is not None and compute is not None:
            want = compute(node)
            have = augmented(node)
            if want != have:
                raise RBTreeError(f"augmented value of {name(node)} is {have}, should be {want}")
        prev = node
        node = node.rb_right
    return count


# --- the compiled accelerator ---------------------------------------------------------
#: The reference implementations, kept under their own names for differential tests.
py_rb_insert_color = rb_insert_color
py_rb_insert_augmented = rb_insert_augmented
py_rb_erase = rb_erase
py_rb_erase_augmented = rb_erase_augmented

if _speedups is not None:
    _speedups.init_rbtree(RBNode, RBRoot)
    rb_insert_color = _speedups.rb_insert_color
    rb_insert_augmented = _speedups.rb_insert_augmented
    rb_erase = _speedups.rb_erase
    rb_erase_augmented = _speedups.rb_erase_augmented
