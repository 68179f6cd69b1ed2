"""The red-black tree against hand-derived shapes and random sequences.

Expected shapes are worked out from lib/rbtree.c's cases, written next to each test.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvmalloc.rbtree import (
    RBNode,
    RBRoot,
    RBTreeError,
    rb_erase,
    rb_erase_augmented,
    rb_first,
    rb_inorder,
    rb_insert_augmented,
    rb_insert_color,
    rb_last,
    rb_link_node,
    rb_next,
    rb_prev,
    validate_rbtree,
)


class N(RBNode):
    __slots__ = ("key", "mx")

    def __init__(self, key: int) -> None:
        super().__init__()
        self.key = key
        self.mx = 0

    def __repr__(self) -> str:
        return f"N({self.key})"


def compute(n: N) -> int:
    m = n.key
    for c in (n.rb_left, n.rb_right):
        if c is not None and c.mx > m:
            m = c.mx
    return m


class MaxAug:
    """Augmented max of keys, callbacks as RB_DECLARE_CALLBACKS_MAX defines them."""

    @staticmethod
    def propagate(node, stop):
        while node is not stop:
            m = compute(node)
            if node.mx == m:
                break
            node.mx = m
            node = node.rb_parent

    @staticmethod
    def copy(old, new):
        new.mx = old.mx

    @staticmethod
    def rotate(old, new):
        new.mx = old.mx
        old.mx = compute(old)


def insert(root: RBRoot, key: int, augment: bool = False) -> N:
    parent, left, node = None, False, root.rb_node
    while node is not None:
        parent, left = node, key < node.key
        node = node.rb_left if left else node.rb_right
    n = N(key)
    rb_link_node(n, parent, left, root)
    if augment:
        rb_insert_augmented(n, root, MaxAug)
        n.mx = 0
        MaxAug.propagate(n, None)
    else:
        rb_insert_color(n, root)
    return n


def shape(node) -> object:
    """(key, colour, left, right) nested, colour 'R'/'B'."""
    if node is None:
        return None
    return (node.key, "R" if node.rb_red else "B", shape(node.rb_left), shape(node.rb_right))


def test_insert_case3_rotation_at_grandparent():
    # 1 is the black root; 2 goes red to its right; 3 under red 2 with a black (NULL)
    # uncle, on the same side -> case 3: left rotate at 1, 2 becomes the black root.
    root = RBRoot()
    for k in (1, 2, 3):
        insert(root, k)
    assert shape(root.rb_node) == (2, "B", (1, "R", None, None), (3, "R", None, None))


def test_insert_case1_flip_then_case3():
    # After 1,2,3 (root 2, red 1 and 3), 4 lands under red 3 with red uncle 1:
    # case 1 flips 1 and 3 black, 2 red, and 2 as the root turns black again.
    # 5 lands under red 4, uncle (3's left) NULL -> case 3 left rotate at 3.
    root = RBRoot()
    for k in (1, 2, 3, 4, 5):
        insert(root, k)
    assert shape(root.rb_node) == (
        2,
        "B",
        (1, "B", None, None),
        (4, "B", (3, "R", None, None), (5, "R", None, None)),
    )


def test_insert_case2_double_rotation():
    # 3, then 1 (red, left), then 2: right child of a left child with a NULL uncle ->
    # case 2 left-rotates at 1, then case 3 right-rotates at 3: root 2.
    root = RBRoot()
    for k in (3, 1, 2):
        insert(root, k)
    assert shape(root.rb_node) == (2, "B", (1, "R", None, None), (3, "R", None, None))


def test_erase_uses_successor_from_right_subtree():
    # Tree of 1..5 is 2B(1B, 4B(3R,5R)). Erasing 2 (two children): the successor is
    # the leftmost of the right subtree, 3 (case 3); 3 takes 2's place and colour.
    # 3 was red with no child, so no rebalancing is needed.
    root = RBRoot()
    nodes = {k: insert(root, k) for k in (1, 2, 3, 4, 5)}
    rb_erase(nodes[2], root)
    assert shape(root.rb_node) == (
        3,
        "B",
        (1, "B", None, None),
        (4, "B", None, (5, "R", None, None)),
    )


def test_erase_black_leaf_rebalances_case4():
    # 2B(1B, 4B(3R,5R)); erasing black leaf 1 leaves a deficit under 2; sibling 4 is
    # black with red right nephew 5 -> case 4: left rotate at 2, recolour:
    # 4 takes 2's colour (B), 2 and 5 become black, 3 stays red under 2.
    root = RBRoot()
    nodes = {k: insert(root, k) for k in (1, 2, 3, 4, 5)}
    rb_erase(nodes[1], root)
    assert shape(root.rb_node) == (
        4,
        "B",
        (2, "B", None, (3, "R", None, None)),
        (5, "B", None, None),
    )


def test_iteration_helpers():
    root = RBRoot()
    nodes = [insert(root, k) for k in (5, 3, 8, 1, 4, 7, 9)]
    assert [n.key for n in rb_inorder(root)] == [1, 3, 4, 5, 7, 8, 9]
    assert rb_first(root).key == 1 and rb_last(root).key == 9
    assert rb_next(nodes[1]).key == 4 and rb_prev(nodes[1]).key == 1
    assert rb_next(rb_last(root)) is None and rb_prev(rb_first(root)) is None


def test_validate_names_the_broken_node():
    root = RBRoot()
    nodes = {k: insert(root, k, augment=True) for k in range(1, 8)}
    validate_rbtree(root, lambda n: n.key, augmented=lambda n: n.mx, compute=compute)
    nodes[3].mx = 100
    with pytest.raises(RBTreeError, match=r"N\(3\)"):
        validate_rbtree(root, lambda n: n.key, augmented=lambda n: n.mx, compute=compute)
    nodes[3].mx = compute(nodes[3])
    nodes[6].rb_red = not nodes[6].rb_red
    with pytest.raises(RBTreeError):
        validate_rbtree(root, lambda n: n.key)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 200)), max_size=300))
def test_random_sequences_keep_invariants(ops):
    root = RBRoot()
    present: dict[int, N] = {}
    for is_insert, key in ops:
        if is_insert and key not in present:
            present[key] = insert(root, key, augment=True)
        elif not is_insert and key in present:
            rb_erase_augmented(present.pop(key), root, MaxAug)
        count = validate_rbtree(root, lambda n: n.key, augmented=lambda n: n.mx, compute=compute)
        assert count == len(present)
    assert [n.key for n in rb_inorder(root)] == sorted(present)


def test_large_random_tree_height_is_logarithmic():
    rng = random.Random(7)
    root = RBRoot()
    keys = rng.sample(range(10**6), 20000)
    nodes = [insert(root, k) for k in keys]
    for n in nodes[::2]:
        rb_erase(n, root)
    validate_rbtree(root, lambda n: n.key)

    def height(n):
        return 0 if n is None else 1 + max(height(n.rb_left), height(n.rb_right))

    assert height(root.rb_node) <= 2 * (10000).bit_length()
