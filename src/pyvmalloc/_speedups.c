/*
 * pyvmalloc._speedups: the compiled accelerator for the red-black tree and the vmap
 * allocator's tree walks. The pure-Python code (rbtree.py, vmap/area.py,
 * vmap/freetree.py, vmap/placement.py, vmap/space.py) is the reference; every function
 * here does exactly what its Python twin does, step for step, on the same Python node
 * objects (heapq/_heapq pattern). Set PYVMALLOC_PURE=1 to run the reference instead.
 * The "whole operations" section below runs entire mechanism methods (vmap/space.py,
 * vmap/purge.py) in one call for the kernel's own policies; the "whole vmalloc/vfree"
 * section does the same for vmalloc()/vfree() of vmalloc.py (with the slab, page
 * allocator and page-table fast paths they reach).
 *
 * Speed comes from reading and writing the nodes' __slots__ directly (their offsets are
 * taken from the member descriptors once, at init) and from doing address arithmetic
 * in uint64_t / unsigned __int128: addresses go up to 2^64 - 1, past what a tagged or
 * signed 64-bit integer holds. A value that does not fit in 64 bits (never the case in
 * a valid model) makes the call fall back to Python arithmetic or the reference.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

typedef unsigned __int128 u128;

static PyTypeObject *rbnode_type = NULL;
static PyTypeObject *rbroot_type = NULL;
static PyTypeObject *va_type = NULL;
static PyObject *free_augment = NULL;
static PyObject *py_lowest = NULL;     /* reference find_vmap_lowest_match */
static Py_ssize_t off_left = -1, off_right, off_parent, off_red, off_root;
static Py_ssize_t off_start = -1, off_end, off_sms, off_state;
static PyObject *st_free = NULL, *st_detached = NULL; /* VaState.FREE, VaState.DETACHED */
static PyObject *small_zero = NULL, *small_one = NULL; /* the ints 0 and 1 */
static Py_ssize_t off_vm = -1, off_flags = -1;
static int va_fast_new = 0; /* set by init_space(): new_va() may fill the slots itself */
static PyObject *s_root, *s_ulong_max, *s_stats, *s_search_visits, *s_rotate, *s_copy,
    *s_propagate;

#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

/* --- deferred decrefs: a node must not die while a fix-up still points at it ------- */
#define GRAVE_MAX 64
typedef struct {
    PyObject *v[GRAVE_MAX];
    int n;
} grave_t;

static inline void bury(grave_t *g, PyObject *o) {
    if (o == NULL) return;
    if (g->n < GRAVE_MAX)
        g->v[g->n++] = o;
    else
        Py_DECREF(o);
}

static inline void flush(grave_t *g) {
    while (g->n > 0) Py_DECREF(g->v[--g->n]);
}

static inline void set_slot(grave_t *g, PyObject *o, Py_ssize_t off, PyObject *v) {
    PyObject *old = SLOT(o, off);
    Py_INCREF(v);
    SLOT(o, off) = v;
    bury(g, old);
}

/* None is stored as Py_None; the C code works with NULL for "no node". */
static inline PyObject *get_node(PyObject *o, Py_ssize_t off) {
    PyObject *v = SLOT(o, off);
    return (v == Py_None) ? NULL : v;
}
static inline void set_node(grave_t *g, PyObject *o, Py_ssize_t off, PyObject *v) {
    set_slot(g, o, off, v ? v : Py_None);
}

static inline int is_red(PyObject *o) {
    PyObject *v = SLOT(o, off_red);
    if (v == Py_True) return 1;
    if (v == Py_False || v == NULL) return 0;
    return PyObject_IsTrue(v) == 1;
}
static inline void set_red(PyObject *o, int red) {
    PyObject *old = SLOT(o, off_red);
    PyObject *v = red ? Py_True : Py_False;
    Py_INCREF(v);
    SLOT(o, off_red) = v;
    Py_XDECREF(old); /* True/False/ints: never a node */
}

static int check_node(PyObject *o, const char *what) {
    if (!PyObject_TypeCheck(o, rbnode_type)) {
        PyErr_Format(PyExc_TypeError, "%s must be an RBNode, not %.100s", what,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    if (!SLOT(o, off_left) || !SLOT(o, off_right) || !SLOT(o, off_parent) ||
        !SLOT(o, off_red)) {
        PyErr_Format(PyExc_AttributeError, "%s has unset rb-tree links", what);
        return -1;
    }
    return 0;
}

static int check_root(PyObject *o) {
    if (!PyObject_TypeCheck(o, rbroot_type)) {
        PyErr_Format(PyExc_TypeError, "root must be an RBRoot, not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    if (!SLOT(o, off_root)) {
        PyErr_SetString(PyExc_AttributeError, "root.rb_node is unset");
        return -1;
    }
    return 0;
}

static int ready(void) {
    if (off_left < 0) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.init_rbtree() was not called");
        return -1;
    }
    return 0;
}
static int va_ready(void) {
    if (off_start < 0) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.init_vmap_area() was not called");
        return -1;
    }
    return 0;
}

/* --- 64-bit values of Python ints ---------------------------------------------------- */
static inline int u64_of(PyObject *o, uint64_t *out) {
    if (o == NULL || !PyLong_CheckExact(o)) return 0;
#if PY_VERSION_HEX < 0x030C0000 && PyLong_SHIFT == 30
    /* CPython <= 3.11 int layout: signed digit count, 30-bit digits. A tree walk reads
     * two or three of these per level, so this beats the generic call by a lot. */
    {
        const digit *d = ((PyLongObject *)o)->ob_digit;
        switch (Py_SIZE(o)) {
        case 0: *out = 0; return 1;
        case 1: *out = d[0]; return 1;
        case 2: *out = (uint64_t)d[0] | ((uint64_t)d[1] << 30); return 1;
        case 3:
            if (d[2] >> 4) return 0;
            *out = (uint64_t)d[0] | ((uint64_t)d[1] << 30) | ((uint64_t)d[2] << 60);
            return 1;
        default: return 0; /* negative, or past 64 bits */
        }
    }
#endif
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *out = (uint64_t)v;
    return 1;
}

/* --- the free tree's augmented value (RB_DECLARE_CALLBACKS_MAX on subtree_max_size) - */

/* compute_subtree_max_size(node) as a new reference (Python arithmetic if it must). */
static PyObject *compute_max(PyObject *node) {
    if (!PyObject_TypeCheck(node, va_type)) {
        PyErr_SetString(PyExc_TypeError, "free tree node is not a VmapArea");
        return NULL;
    }
    PyObject *s = SLOT(node, off_start), *e = SLOT(node, off_end);
    PyObject *l = get_node(node, off_left), *r = get_node(node, off_right);
    if ((l && !PyObject_TypeCheck(l, va_type)) || (r && !PyObject_TypeCheck(r, va_type))) {
        PyErr_SetString(PyExc_TypeError, "free tree node is not a VmapArea");
        return NULL;
    }
    PyObject *lm = l ? SLOT(l, off_sms) : NULL, *rm = r ? SLOT(r, off_sms) : NULL;
    uint64_t us, ue, ul = 0, ur = 0;
    if (!s || !e || (l && !lm) || (r && !rm)) {
        PyErr_SetString(PyExc_AttributeError, "vmap_area with unset fields");
        return NULL;
    }
    if (u64_of(s, &us) && u64_of(e, &ue) && ue >= us && (!l || u64_of(lm, &ul)) &&
        (!r || u64_of(rm, &ur))) {
        uint64_t m = ue - us;
        PyObject *best = NULL;
        if (l && ul > m) { m = ul; best = lm; }
        if (r && ur > m) { m = ur; best = rm; }
        if (best) { Py_INCREF(best); return best; }
        return PyLong_FromUnsignedLongLong(m);
    }
    /* slow path: exactly the reference's comparisons on Python ints */
    PyObject *m = PyNumber_Subtract(e, s);
    if (!m) return NULL;
    PyObject *kids[2] = {lm, rm};
    for (int i = 0; i < 2; i++) {
        if (!kids[i]) continue;
        int gt = PyObject_RichCompareBool(kids[i], m, Py_GT);
        if (gt < 0) { Py_DECREF(m); return NULL; }
        if (gt) { Py_DECREF(m); m = kids[i]; Py_INCREF(m); }
    }
    return m;
}

/* propagate(node, stop); returns -1 on error. */
static int free_propagate(PyObject *node, PyObject *stop) {
    while (node != NULL && node != stop) {
        PyObject *m = compute_max(node);
        if (!m) return -1;
        PyObject *cur = SLOT(node, off_sms);
        int eq;
        uint64_t a, b;
        if (cur == m) eq = 1;
        else if (u64_of(cur, &a) && u64_of(m, &b)) eq = (a == b);
        else {
            eq = cur ? PyObject_RichCompareBool(cur, m, Py_EQ) : 0;
            if (eq < 0) { Py_DECREF(m); return -1; }
        }
        if (eq) { Py_DECREF(m); break; }
        SLOT(node, off_sms) = m; /* steals m */
        Py_XDECREF(cur);
        node = get_node(node, off_parent);
    }
    return 0;
}

/* The augment callbacks: native for the free tree's, Python calls for any other. */
typedef struct {
    PyObject *aug; /* NULL: no augment; free_augment: native */
} aug_t;

static int aug_rotate(aug_t *a, PyObject *old, PyObject *new_) {
    if (a->aug == NULL) return 0;
    if (a->aug == free_augment) {
        PyObject *v = SLOT(old, off_sms);
        Py_XINCREF(v);
        PyObject *prev = SLOT(new_, off_sms);
        SLOT(new_, off_sms) = v;
        Py_XDECREF(prev);
        PyObject *m = compute_max(old);
        if (!m) return -1;
        prev = SLOT(old, off_sms);
        SLOT(old, off_sms) = m;
        Py_XDECREF(prev);
        return 0;
    }
    PyObject *r = PyObject_CallMethodObjArgs(a->aug, s_rotate, old, new_, NULL);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

static int aug_copy(aug_t *a, PyObject *old, PyObject *new_) {
    if (a->aug == NULL) return 0;
    if (a->aug == free_augment) {
        PyObject *v = SLOT(old, off_sms);
        Py_XINCREF(v);
        PyObject *prev = SLOT(new_, off_sms);
        SLOT(new_, off_sms) = v;
        Py_XDECREF(prev);
        return 0;
    }
    PyObject *r = PyObject_CallMethodObjArgs(a->aug, s_copy, old, new_, NULL);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

static int aug_propagate(aug_t *a, PyObject *node, PyObject *stop) {
    if (a->aug == NULL) return 0;
    if (a->aug == free_augment) return free_propagate(node, stop);
    PyObject *r = PyObject_CallMethodObjArgs(a->aug, s_propagate, node ? node : Py_None,
                                             stop ? stop : Py_None, NULL);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

/* --- lib/rbtree.c ---------------------------------------------------------------------- */
static void change_child(grave_t *g, PyObject *old, PyObject *new_, PyObject *parent,
                         PyObject *root) {
    if (parent == NULL)
        set_node(g, root, off_root, new_);
    else if (get_node(parent, off_left) == old)
        set_node(g, parent, off_left, new_);
    else
        set_node(g, parent, off_right, new_);
}

static void rotate_set_parents(grave_t *g, PyObject *old, PyObject *new_, PyObject *root,
                               int red) {
    PyObject *parent = get_node(old, off_parent);
    set_node(g, new_, off_parent, parent);
    set_red(new_, is_red(old));
    set_node(g, old, off_parent, new_);
    set_red(old, red);
    change_child(g, old, new_, parent, root);
}

static int rb_insert_impl(grave_t *g, PyObject *node, PyObject *root, aug_t *a) {
    PyObject *parent = get_node(node, off_parent);
    PyObject *gparent, *tmp;
    for (;;) {
        if (parent == NULL) {
            set_red(node, 0);
            return 0;
        }
        if (!is_red(parent)) return 0;
        gparent = get_node(parent, off_parent);
        if (gparent == NULL) {
            PyErr_SetString(PyExc_AttributeError, "red node without a parent");
            return -1;
        }
        tmp = get_node(gparent, off_right);
        if (parent != tmp) {
            if (tmp != NULL && is_red(tmp)) {
                set_red(tmp, 0);
                set_red(parent, 0);
                node = gparent;
                parent = get_node(node, off_parent);
                set_red(node, 1);
                continue;
            }
            tmp = get_node(parent, off_right);
            if (node == tmp) {
                tmp = get_node(node, off_left);
                set_node(g, parent, off_right, tmp);
                set_node(g, node, off_left, parent);
                if (tmp != NULL) {
                    set_node(g, tmp, off_parent, parent);
                    set_red(tmp, 0);
                }
                set_node(g, parent, off_parent, node);
                set_red(parent, 1);
                if (aug_rotate(a, parent, node) < 0) return -1;
                parent = node;
                tmp = get_node(node, off_right);
            }
            set_node(g, gparent, off_left, tmp);
            set_node(g, parent, off_right, gparent);
            if (tmp != NULL) {
                set_node(g, tmp, off_parent, gparent);
                set_red(tmp, 0);
            }
            rotate_set_parents(g, gparent, parent, root, 1);
            return aug_rotate(a, gparent, parent);
        } else {
            tmp = get_node(gparent, off_left);
            if (tmp != NULL && is_red(tmp)) {
                set_red(tmp, 0);
                set_red(parent, 0);
                node = gparent;
                parent = get_node(node, off_parent);
                set_red(node, 1);
                continue;
            }
            tmp = get_node(parent, off_left);
            if (node == tmp) {
                tmp = get_node(node, off_right);
                set_node(g, parent, off_left, tmp);
                set_node(g, node, off_right, parent);
                if (tmp != NULL) {
                    set_node(g, tmp, off_parent, parent);
                    set_red(tmp, 0);
                }
                set_node(g, parent, off_parent, node);
                set_red(parent, 1);
                if (aug_rotate(a, parent, node) < 0) return -1;
                parent = node;
                tmp = get_node(node, off_left);
            }
            set_node(g, gparent, off_right, tmp);
            set_node(g, parent, off_left, gparent);
            if (tmp != NULL) {
                set_node(g, tmp, off_parent, gparent);
                set_red(tmp, 0);
            }
            rotate_set_parents(g, gparent, parent, root, 1);
            return aug_rotate(a, gparent, parent);
        }
    }
}

static int rb_erase_color_impl(grave_t *g, PyObject *parent, PyObject *root, aug_t *a) {
    PyObject *node = NULL, *sibling, *tmp1, *tmp2;
    for (;;) {
        sibling = get_node(parent, off_right);
        if (node != sibling) {
            if (sibling == NULL) goto broken;
            if (is_red(sibling)) {
                tmp1 = get_node(sibling, off_left);
                if (tmp1 == NULL) goto broken;
                set_node(g, parent, off_right, tmp1);
                set_node(g, sibling, off_left, parent);
                set_node(g, tmp1, off_parent, parent);
                set_red(tmp1, 0);
                rotate_set_parents(g, parent, sibling, root, 1);
                if (aug_rotate(a, parent, sibling) < 0) return -1;
                sibling = tmp1;
            }
            tmp1 = get_node(sibling, off_right);
            if (tmp1 == NULL || !is_red(tmp1)) {
                tmp2 = get_node(sibling, off_left);
                if (tmp2 == NULL || !is_red(tmp2)) {
                    set_node(g, sibling, off_parent, parent);
                    set_red(sibling, 1);
                    if (is_red(parent))
                        set_red(parent, 0);
                    else {
                        node = parent;
                        parent = get_node(node, off_parent);
                        if (parent != NULL) continue;
                    }
                    return 0;
                }
                tmp1 = get_node(tmp2, off_right);
                set_node(g, sibling, off_left, tmp1);
                set_node(g, tmp2, off_right, sibling);
                set_node(g, parent, off_right, tmp2);
                if (tmp1 != NULL) {
                    set_node(g, tmp1, off_parent, sibling);
                    set_red(tmp1, 0);
                }
                if (aug_rotate(a, sibling, tmp2) < 0) return -1;
                tmp1 = sibling;
                sibling = tmp2;
            }
            tmp2 = get_node(sibling, off_left);
            set_node(g, parent, off_right, tmp2);
            set_node(g, sibling, off_left, parent);
            set_node(g, tmp1, off_parent, sibling);
            set_red(tmp1, 0);
            if (tmp2 != NULL) set_node(g, tmp2, off_parent, parent);
            rotate_set_parents(g, parent, sibling, root, 0);
            return aug_rotate(a, parent, sibling);
        } else {
            sibling = get_node(parent, off_left);
            if (sibling == NULL) goto broken;
            if (is_red(sibling)) {
                tmp1 = get_node(sibling, off_right);
                if (tmp1 == NULL) goto broken;
                set_node(g, parent, off_left, tmp1);
                set_node(g, sibling, off_right, parent);
                set_node(g, tmp1, off_parent, parent);
                set_red(tmp1, 0);
                rotate_set_parents(g, parent, sibling, root, 1);
                if (aug_rotate(a, parent, sibling) < 0) return -1;
                sibling = tmp1;
            }
            tmp1 = get_node(sibling, off_left);
            if (tmp1 == NULL || !is_red(tmp1)) {
                tmp2 = get_node(sibling, off_right);
                if (tmp2 == NULL || !is_red(tmp2)) {
                    set_node(g, sibling, off_parent, parent);
                    set_red(sibling, 1);
                    if (is_red(parent))
                        set_red(parent, 0);
                    else {
                        node = parent;
                        parent = get_node(node, off_parent);
                        if (parent != NULL) continue;
                    }
                    return 0;
                }
                tmp1 = get_node(tmp2, off_left);
                set_node(g, sibling, off_right, tmp1);
                set_node(g, tmp2, off_left, sibling);
                set_node(g, parent, off_left, tmp2);
                if (tmp1 != NULL) {
                    set_node(g, tmp1, off_parent, sibling);
                    set_red(tmp1, 0);
                }
                if (aug_rotate(a, sibling, tmp2) < 0) return -1;
                tmp1 = sibling;
                sibling = tmp2;
            }
            tmp2 = get_node(sibling, off_right);
            set_node(g, parent, off_left, tmp2);
            set_node(g, sibling, off_right, parent);
            set_node(g, tmp1, off_parent, sibling);
            set_red(tmp1, 0);
            if (tmp2 != NULL) set_node(g, tmp2, off_parent, parent);
            rotate_set_parents(g, parent, sibling, root, 0);
            return aug_rotate(a, parent, sibling);
        }
    }
broken:
    PyErr_SetString(PyExc_AttributeError, "rb_erase: the tree is not a valid red-black tree");
    return -1;
}

/* __rb_erase_augmented; *rebalance gets where the colour fix-up starts (or NULL). */
static int rb_erase_impl(grave_t *g, PyObject *node, PyObject *root, aug_t *a,
                         PyObject **rebalance) {
    PyObject *child = get_node(node, off_right);
    PyObject *tmp = get_node(node, off_left);
    PyObject *parent, *successor, *child2, *nparent;
    *rebalance = NULL;
    if (tmp == NULL) {
        parent = get_node(node, off_parent);
        change_child(g, node, child, parent, root);
        if (child != NULL) {
            set_node(g, child, off_parent, parent);
            set_red(child, is_red(node));
        } else {
            *rebalance = is_red(node) ? NULL : parent;
        }
        tmp = parent;
    } else if (child == NULL) {
        parent = get_node(node, off_parent);
        set_node(g, tmp, off_parent, parent);
        set_red(tmp, is_red(node));
        change_child(g, node, tmp, parent, root);
        tmp = parent;
    } else {
        successor = child;
        tmp = get_node(child, off_left);
        if (tmp == NULL) {
            parent = successor;
            child2 = get_node(successor, off_right);
            if (aug_copy(a, node, successor) < 0) return -1;
        } else {
            for (;;) {
                parent = successor;
                successor = tmp;
                tmp = get_node(tmp, off_left);
                if (tmp == NULL) break;
            }
            child2 = get_node(successor, off_right);
            set_node(g, parent, off_left, child2);
            set_node(g, successor, off_right, child);
            set_node(g, child, off_parent, successor);
            if (aug_copy(a, node, successor) < 0) return -1;
            if (aug_propagate(a, parent, successor) < 0) return -1;
        }
        tmp = get_node(node, off_left);
        set_node(g, successor, off_left, tmp);
        set_node(g, tmp, off_parent, successor);
        nparent = get_node(node, off_parent);
        change_child(g, node, successor, nparent, root);
        if (child2 != NULL) {
            set_node(g, successor, off_parent, nparent);
            set_red(successor, is_red(node));
            set_node(g, child2, off_parent, parent);
            set_red(child2, 0);
        } else {
            int was_red = is_red(successor);
            set_node(g, successor, off_parent, nparent);
            set_red(successor, is_red(node));
            *rebalance = was_red ? NULL : parent;
        }
        tmp = successor;
    }
    return aug_propagate(a, tmp, NULL);
}

static int parse_aug(PyObject *aug, aug_t *a) {
    if (aug == free_augment) {
        if (va_ready() < 0) return -1;
    }
    a->aug = aug;
    return 0;
}

static PyObject *insert_common(PyObject *args, int augmented) {
    PyObject *node, *root, *aug = NULL;
    aug_t a = {NULL};
    grave_t g;
    g.n = 0;
    if (ready() < 0) return NULL;
    if (augmented) {
        if (!PyArg_ParseTuple(args, "OOO", &node, &root, &aug)) return NULL;
        if (parse_aug(aug, &a) < 0) return NULL;
    } else if (!PyArg_ParseTuple(args, "OO", &node, &root))
        return NULL;
    if (check_node(node, "node") < 0 || check_root(root) < 0) return NULL;
    Py_INCREF(node);
    int rc = rb_insert_impl(&g, node, root, &a);
    flush(&g);
    Py_DECREF(node);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *sp_rb_insert_color(PyObject *self, PyObject *args) {
    return insert_common(args, 0);
}
static PyObject *sp_rb_insert_augmented(PyObject *self, PyObject *args) {
    return insert_common(args, 1);
}

static PyObject *erase_common(PyObject *args, int augmented) {
    PyObject *node, *root, *aug = NULL, *rebalance = NULL;
    aug_t a = {NULL};
    grave_t g;
    g.n = 0;
    if (ready() < 0) return NULL;
    if (augmented) {
        if (!PyArg_ParseTuple(args, "OOO", &node, &root, &aug)) return NULL;
        if (parse_aug(aug, &a) < 0) return NULL;
    } else if (!PyArg_ParseTuple(args, "OO", &node, &root))
        return NULL;
    if (check_node(node, "node") < 0 || check_root(root) < 0) return NULL;
    Py_INCREF(node);
    int rc = rb_erase_impl(&g, node, root, &a, &rebalance);
    if (rc == 0 && rebalance != NULL) rc = rb_erase_color_impl(&g, rebalance, root, &a);
    flush(&g);
    Py_DECREF(node);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *sp_rb_erase(PyObject *self, PyObject *args) { return erase_common(args, 0); }
static PyObject *sp_rb_erase_augmented(PyObject *self, PyObject *args) {
    return erase_common(args, 1);
}

/* --- vmap area helpers ---------------------------------------------------------------- */
static int check_va(PyObject *o) {
    if (!PyObject_TypeCheck(o, va_type)) {
        PyErr_Format(PyExc_TypeError, "expected a VmapArea, not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    return 0;
}

static PyObject *sp_propagate(PyObject *self, PyObject *args) {
    PyObject *node, *stop;
    if (!PyArg_ParseTuple(args, "OO", &node, &stop)) return NULL;
    if (va_ready() < 0) return NULL;
    if (node == Py_None) Py_RETURN_NONE;
    if (check_va(node) < 0) return NULL;
    if (free_propagate(node, stop == Py_None ? NULL : stop) < 0) return NULL;
    Py_RETURN_NONE;
}

/* Read va_start/va_end of a node as u64; 0 if not representable. */
static inline int va_bounds(PyObject *n, uint64_t *s, uint64_t *e) {
    return u64_of(SLOT(n, off_start), s) && u64_of(SLOT(n, off_end), e);
}

/* _find_in(root, addr): the busy area containing addr, or None. */
static PyObject *sp_busy_find(PyObject *self, PyObject *args) {
    PyObject *root, *addr_o;
    uint64_t addr, s, e;
    if (!PyArg_ParseTuple(args, "OO", &root, &addr_o)) return NULL;
    if (va_ready() < 0 || check_root(root) < 0) return NULL;
    if (!u64_of(addr_o, &addr)) goto slow;
    PyObject *node = get_node(root, off_root);
    while (node != NULL) {
        if (!PyObject_TypeCheck(node, va_type) || !u64_of(SLOT(node, off_start), &s)) goto slow;
        if (addr < s)
            node = get_node(node, off_left);
        else if (!u64_of(SLOT(node, off_end), &e))
            goto slow;
        else if (addr >= e)
            node = get_node(node, off_right);
        else {
            Py_INCREF(node);
            return node;
        }
    }
    Py_RETURN_NONE;
slow:
    /* Python comparisons, same walk */
    if (PyErr_Occurred()) return NULL;
    node = get_node(root, off_root);
    while (node != NULL) {
        if (check_va(node) < 0) return NULL;
        int lt = PyObject_RichCompareBool(addr_o, SLOT(node, off_start), Py_LT);
        if (lt < 0) return NULL;
        if (lt) { node = get_node(node, off_left); continue; }
        int ge = PyObject_RichCompareBool(addr_o, SLOT(node, off_end), Py_GE);
        if (ge < 0) return NULL;
        if (ge) { node = get_node(node, off_right); continue; }
        Py_INCREF(node);
        return node;
    }
    Py_RETURN_NONE;
}

/* busy_unlink(root, addr): the busy area containing addr, erased from the tree with
 * its links cleared (unlink_va), or None when the tree has none. Values past 64 bits:
 * OverflowError before any change. */
static PyObject *sp_busy_unlink(PyObject *self, PyObject *args) {
    PyObject *root, *addr_o;
    uint64_t addr, s, e;
    if (!PyArg_ParseTuple(args, "OO", &root, &addr_o)) return NULL;
    if (va_ready() < 0 || check_root(root) < 0) return NULL;
    if (!u64_of(addr_o, &addr)) goto overflow;
    PyObject *node = get_node(root, off_root);
    while (node != NULL) {
        if (!PyObject_TypeCheck(node, va_type) || !u64_of(SLOT(node, off_start), &s))
            goto overflow;
        if (addr < s)
            node = get_node(node, off_left);
        else if (!u64_of(SLOT(node, off_end), &e))
            goto overflow;
        else if (addr >= e)
            node = get_node(node, off_right);
        else
            break;
    }
    if (node == NULL) Py_RETURN_NONE;
    if (check_node(node, "node") < 0) return NULL;
    grave_t g;
    g.n = 0;
    aug_t a = {NULL};
    PyObject *rebalance = NULL;
    Py_INCREF(node); /* returned */
    int rc = rb_erase_impl(&g, node, root, &a, &rebalance);
    if (rc == 0 && rebalance != NULL) rc = rb_erase_color_impl(&g, rebalance, root, &a);
    if (rc == 0) {
        set_node(&g, node, off_parent, NULL);
        set_node(&g, node, off_left, NULL);
        set_node(&g, node, off_right, NULL);
    }
    flush(&g);
    if (rc < 0) {
        Py_DECREF(node);
        return NULL;
    }
    return node;
overflow:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_OverflowError, "busy tree values do not fit unsigned long");
    return NULL;
}

/* busy_insert(root, va): descend by address, link and colour va; return None, or the
 * area va overlaps (then nothing is linked). */
static PyObject *sp_busy_insert(PyObject *self, PyObject *args) {
    PyObject *root, *va;
    uint64_t vs, ve, s, e;
    grave_t g;
    g.n = 0;
    if (!PyArg_ParseTuple(args, "OO", &root, &va)) return NULL;
    if (va_ready() < 0 || check_root(root) < 0 || check_va(va) < 0 ||
        check_node(va, "va") < 0)
        return NULL;
    if (!va_bounds(va, &vs, &ve)) {
        PyErr_SetString(PyExc_OverflowError, "vmap_area bounds do not fit unsigned long");
        return NULL;
    }
    PyObject *node = get_node(root, off_root), *parent = NULL;
    int left = 0;
    while (node != NULL) {
        parent = node;
        if (!PyObject_TypeCheck(node, va_type) || !u64_of(SLOT(node, off_start), &s)) {
            PyErr_SetString(PyExc_OverflowError, "busy tree node bounds do not fit");
            return NULL;
        }
        if (ve <= s) {
            left = 1;
            node = get_node(node, off_left);
        } else if (!u64_of(SLOT(node, off_end), &e)) {
            PyErr_SetString(PyExc_OverflowError, "busy tree node bounds do not fit");
            return NULL;
        } else if (vs >= e) {
            left = 0;
            node = get_node(node, off_right);
        } else {
            Py_INCREF(node);
            return node;
        }
    }
    Py_INCREF(va);
    /* rb_link_node */
    set_node(&g, va, off_parent, parent);
    set_node(&g, va, off_left, NULL);
    set_node(&g, va, off_right, NULL);
    set_red(va, 1);
    if (parent == NULL)
        set_node(&g, root, off_root, va);
    else
        set_node(&g, parent, left ? off_left : off_right, va);
    aug_t a = {NULL};
    int rc = rb_insert_impl(&g, va, root, &a);
    flush(&g);
    Py_DECREF(va);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

/* find_va_links(start, va_start, va_end) -> (parent, left, prev, next), or the node
 * the range overlaps. start is the node to descend from (not None). */
static PyObject *sp_find_va_links(PyObject *self, PyObject *args) {
    PyObject *node, *vs_o, *ve_o;
    uint64_t vs, ve, s, e;
    if (!PyArg_ParseTuple(args, "OOO", &node, &vs_o, &ve_o)) return NULL;
    if (va_ready() < 0) return NULL;
    if (!u64_of(vs_o, &vs) || !u64_of(ve_o, &ve)) {
        PyErr_SetString(PyExc_OverflowError, "vmap_area bounds do not fit unsigned long");
        return NULL;
    }
    PyObject *prev = Py_None, *nxt = Py_None, *child;
    for (;;) {
        if (!PyObject_TypeCheck(node, va_type) || !va_bounds(node, &s, &e)) {
            PyErr_SetString(PyExc_OverflowError, "free tree node bounds do not fit");
            return NULL;
        }
        if (ve <= s) {
            nxt = node;
            child = get_node(node, off_left);
            if (child == NULL) return Py_BuildValue("(OOOO)", node, Py_True, prev, nxt);
        } else if (vs >= e) {
            prev = node;
            child = get_node(node, off_right);
            if (child == NULL) return Py_BuildValue("(OOOO)", node, Py_False, prev, nxt);
        } else {
            Py_INCREF(node);
            return node;
        }
        node = child;
    }
}

static int add_visits(PyObject *tree, long visits) {
    PyObject *stats = PyObject_GetAttr(tree, s_stats);
    if (!stats) return -1;
    PyObject *cur = PyObject_GetAttr(stats, s_search_visits);
    if (!cur) { Py_DECREF(stats); return -1; }
    PyObject *inc = PyLong_FromLong(visits);
    PyObject *sum = inc ? PyNumber_Add(cur, inc) : NULL;
    Py_DECREF(cur);
    Py_XDECREF(inc);
    int rc = sum ? PyObject_SetAttr(stats, s_search_visits, sum) : -1;
    Py_XDECREF(sum);
    Py_DECREF(stats);
    return rc;
}

static PyObject *call_reference_lowest(PyObject *args);

/* The descent of find_vmap_lowest_match from `node` on 64-bit values: 1 when done
 * (*found is the block, or NULL when none fits; *visits counts the nodes examined),
 * 0 when a value does not fit 64 bits (nothing was counted: the caller takes the
 * reference). The caller has checked the search rules (shift or adjust, align > 0). */
static int lowest_core(PyObject *node, uint64_t size, uint64_t align, uint64_t vstart64,
                       int adjust, int shift, uint64_t umax, long *visits_out,
                       PyObject **found_out) {
    u128 vstart = vstart64;
    u128 length = adjust ? (u128)size + align - 1 : (u128)size;
    u128 mask = (u128)(~(align - 1) & umax);
    long visits = 0;
    uint64_t s, e, m;
    PyObject *found = NULL;
#define FITS(n_s, n_e)                                                          \
    ({                                                                          \
        u128 base_ = (u128)(n_s) > vstart ? (u128)(n_s) : vstart;              \
        u128 nva_ = (base_ + align - 1) & mask;                                 \
        u128 end_ = nva_ + size;                                                \
        end_ <= umax && nva_ >= vstart && end_ <= (u128)(n_e);                  \
    })
#define BOUNDS(n)                                                               \
    if (!PyObject_TypeCheck((n), va_type) || !va_bounds((n), &s, &e)) return 0
#define SMS(n) \
    if (!PyObject_TypeCheck((n), va_type) || !u64_of(SLOT((n), off_sms), &m)) return 0
    while (node != NULL) {
        visits++;
        PyObject *left = get_node(node, off_left);
        BOUNDS(node);
        if (left != NULL) {
            SMS(left);
            if ((u128)m >= length && vstart < s) {
                node = left;
                continue;
            }
        }
        if (FITS(s, e)) { found = node; goto done; }
        PyObject *right = get_node(node, off_right);
        if (right != NULL) {
            SMS(right);
            if ((u128)m >= length) {
                node = right;
                continue;
            }
        }
        for (;;) {
            node = get_node(node, off_parent);
            if (node == NULL) goto done;
            visits++;
            BOUNDS(node);
            if (FITS(s, e)) { found = node; goto done; }
            right = get_node(node, off_right);
            if (right != NULL) {
                SMS(right);
                if ((u128)m >= length && vstart <= s) {
                    if (shift) vstart = (u128)s + 1;
                    node = right;
                    break;
                }
            }
        }
    }
done:
    *visits_out = visits;
    *found_out = found;
    return 1;
#undef FITS
#undef BOUNDS
#undef SMS
}

/* find_vmap_lowest_match(tree, size, align, vstart, adjust_search_size, shift_vstart) */
static PyObject *sp_find_vmap_lowest_match(PyObject *self, PyObject *args) {
    PyObject *tree, *size_o, *align_o, *vstart_o;
    int adjust, shift;
    if (!PyArg_ParseTuple(args, "OOOOpp", &tree, &size_o, &align_o, &vstart_o, &adjust, &shift))
        return NULL;
    if (va_ready() < 0) return NULL;
    uint64_t size, align, vstart64, umax;
    PyObject *umax_o = NULL, *root = NULL, *node, *found = NULL;
    int ok = u64_of(size_o, &size) && u64_of(align_o, &align) && u64_of(vstart_o, &vstart64) &&
             align > 0;
    if (ok) {
        umax_o = PyObject_GetAttr(tree, s_ulong_max);
        if (!umax_o) return NULL;
        ok = u64_of(umax_o, &umax);
        Py_DECREF(umax_o);
    }
    if (!ok) {
        if (PyErr_Occurred()) return NULL;
        return call_reference_lowest(args);
    }
    if (!shift && !adjust && align > 1) {
        PyErr_SetString(PyExc_ValueError,
                        "a search without vstart shift needs L = size + align - 1");
        return NULL;
    }
    root = PyObject_GetAttr(tree, s_root);
    if (!root) return NULL;
    if (check_root(root) < 0) { Py_DECREF(root); return NULL; }
    node = get_node(root, off_root);
    Py_DECREF(root); /* the tree keeps it alive */
    long visits = 0;
    if (!lowest_core(node, size, align, vstart64, adjust, shift, umax, &visits, &found))
        return call_reference_lowest(args);
    if (found == NULL) found = Py_None;
    Py_INCREF(found); /* before add_visits, which may run Python code */
    if (add_visits(tree, visits) < 0) {
        Py_DECREF(found);
        return NULL;
    }
    return found;
}

/* --- free-tree mechanism: merge_or_add_vmap_area_augment, va_clip ------------------- */

/* The descent of find_va_links from `node`: fills parent/left/prev/next and their
 * bounds; returns 0, 1 on overlap (*other set), -1 on a value past 64 bits. */
typedef struct {
    PyObject *parent, *prev, *next, *other;
    int left;
    uint64_t prev_end, next_start;
} links_t;

static int descend_links(PyObject *node, uint64_t vs, uint64_t ve, links_t *L) {
    uint64_t s, e;
    L->parent = L->prev = L->next = L->other = NULL;
    L->left = 0;
    while (node != NULL) {
        if (!PyObject_TypeCheck(node, va_type) || !va_bounds(node, &s, &e)) return -1;
        if (ve <= s) {
            L->next = node;
            L->next_start = s;
            L->parent = node;
            L->left = 1;
            node = get_node(node, off_left);
        } else if (vs >= e) {
            L->prev = node;
            L->prev_end = e;
            L->parent = node;
            L->left = 0;
            node = get_node(node, off_right);
        } else {
            L->other = node;
            return 1;
        }
    }
    return 0;
}

static inline void set_state(grave_t *g, PyObject *va, PyObject *st) { set_slot(g, va, off_state, st); }

/* FreeTree.link(va, parent, left) without the counter. */
static int free_link(grave_t *g, PyObject *root, PyObject *va, PyObject *parent, int left) {
    aug_t a;
    a.aug = free_augment;
    PyObject *zero = PyLong_FromLong(0); /* a cached small int */
    if (!zero) return -1;
    set_slot(g, va, off_sms, zero);
    set_node(g, va, off_parent, parent);
    set_node(g, va, off_left, NULL);
    set_node(g, va, off_right, NULL);
    set_red(va, 1);
    if (parent == NULL)
        set_node(g, root, off_root, va);
    else
        set_node(g, parent, left ? off_left : off_right, va);
    if (rb_insert_impl(g, va, root, &a) < 0) { Py_DECREF(zero); return -1; }
    set_slot(g, va, off_sms, zero);
    Py_DECREF(zero);
    set_state(g, va, st_free);
    return free_propagate(va, NULL);
}

/* FreeTree.unlink_va_augment(va) without the counter. */
static int free_unlink(grave_t *g, PyObject *root, PyObject *va) {
    aug_t a;
    a.aug = free_augment;
    PyObject *rebalance = NULL;
    if (rb_erase_impl(g, va, root, &a, &rebalance) < 0) return -1;
    if (rebalance != NULL && rb_erase_color_impl(g, rebalance, root, &a) < 0) return -1;
    set_node(g, va, off_parent, NULL);
    set_node(g, va, off_left, NULL);
    set_node(g, va, off_right, NULL);
    set_state(g, va, st_detached);
    return 0;
}

static int state_ready(void) {
    if (va_ready() < 0) return -1;
    if (st_free == NULL || st_detached == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.init_vmap_area() was not called");
        return -1;
    }
    return 0;
}

/* merge_or_add_vmap_area_augment on 64-bit values, without the counter: 0 when done
 * (*block: the free block that now holds va, borrowed; *delta: the nr_free change),
 * 1 on overlap (*block: the area va overlaps; nothing changed), -2 when a value does
 * not fit 64 bits (nothing changed), -1 on error. Overwritten links go to `g`. */
static int merge_core(grave_t *g, PyObject *root, PyObject *va, int each_step,
                      PyObject **block, int *delta_out) {
    uint64_t vs, ve;
    links_t L;
    if (!va_bounds(va, &vs, &ve)) return -2;
    int rc = descend_links(get_node(root, off_root), vs, ve, &L);
    if (rc < 0) return -2;
    if (rc == 1) { *block = L.other; return 1; }
    int merged = 0, delta = 0;
    if (L.parent != NULL) {
        if (L.next != NULL && L.next_start == ve) {
            set_slot(g, L.next, off_start, SLOT(va, off_start));
            if (each_step && free_propagate(L.next, NULL) < 0) return -1;
            set_state(g, va, st_detached);
            va = L.next;
            merged = 1;
        }
        if (L.prev != NULL && L.prev_end == vs) {
            /* prev.va_end == va.va_start (after a merge with next, next starts at vs) */
            if (each_step) {
                set_slot(g, L.prev, off_end, SLOT(va, off_end));
                if (free_propagate(L.prev, NULL) < 0) return -1;
                if (merged) {
                    if (free_unlink(g, root, va) < 0) return -1;
                    delta -= 1;
                }
            } else {
                if (merged) {
                    if (free_unlink(g, root, va) < 0) return -1;
                    delta -= 1;
                }
                set_slot(g, L.prev, off_end, SLOT(va, off_end));
            }
            set_state(g, va, st_detached);
            va = L.prev;
            merged = 1;
        }
    }
    if (!merged) {
        if (free_link(g, root, va, L.parent, L.left) < 0) return -1;
        delta += 1;
    } else if (!each_step) {
        if (free_propagate(va, NULL) < 0) return -1;
    }
    *block = va;
    *delta_out = delta;
    return 0;
}

/* merge_or_add(root, va, each_step) -> (block, nr_free delta) or (None, other) on
 * overlap; OverflowError (before any change) for values past 64 bits. */
static PyObject *sp_merge_or_add(PyObject *self, PyObject *args) {
    PyObject *root, *va, *block = NULL, *result = NULL;
    int each_step, delta = 0;
    grave_t g;
    g.n = 0;
    if (!PyArg_ParseTuple(args, "OOp", &root, &va, &each_step)) return NULL;
    if (state_ready() < 0 || check_root(root) < 0 || check_va(va) < 0 ||
        check_node(va, "va") < 0)
        return NULL;
    Py_INCREF(va);
    int rc = merge_core(&g, root, va, each_step, &block, &delta);
    if (rc == 0 || rc == 1) Py_INCREF(block); /* before the flush */
    flush(&g);
    Py_DECREF(va);
    if (rc == 0) result = Py_BuildValue("(Oi)", block, delta);
    else if (rc == 1) result = Py_BuildValue("(OO)", Py_None, block);
    else if (rc == -2)
        PyErr_SetString(PyExc_OverflowError, "free tree values do not fit unsigned long");
    if (rc == 0 || rc == 1) Py_DECREF(block);
    return result;
}

/* A new VmapArea(start, end), as VmapArea.__init__ (vmap/area.py) leaves it: slot by
 * slot when init_space() found the type's layout to be exactly its known slots, else
 * by calling the type. New reference. */
static PyObject *new_va(PyObject *start, PyObject *end) {
    if (va_fast_new) {
        PyObject *va = va_type->tp_alloc(va_type, 0);
        if (!va) return NULL;
        Py_INCREF(Py_None); SLOT(va, off_parent) = Py_None;
        Py_INCREF(Py_None); SLOT(va, off_left) = Py_None;
        Py_INCREF(Py_None); SLOT(va, off_right) = Py_None;
        Py_INCREF(Py_False); SLOT(va, off_red) = Py_False;
        Py_INCREF(start); SLOT(va, off_start) = start;
        Py_INCREF(end); SLOT(va, off_end) = end;
        Py_INCREF(small_zero); SLOT(va, off_sms) = small_zero;
        Py_INCREF(Py_None); SLOT(va, off_vm) = Py_None;
        Py_INCREF(small_zero); SLOT(va, off_flags) = small_zero;
        Py_INCREF(st_detached); SLOT(va, off_state) = st_detached;
        return va;
    }
    return PyObject_CallFunctionObjArgs((PyObject *)va_type, start, end, NULL);
}

/* va_clip (FreeTree.va_clip) on 64-bit values, without the counter: returns the fit
 * type 1..4 (FL, LE, RE, NE) with *delta the nr_free change, after counting it in
 * fits; 0 for NOTHING_FIT (nothing changed); -1 on error. When the NE split's left
 * part overlaps a block, *lva and *other are set (new references; the caller
 * complains) and nothing is linked. */
static int clip_core(grave_t *g, PyObject *root, PyObject *va, uint64_t vs, uint64_t ve,
                     PyObject *nva_o, uint64_t nva, uint64_t size, PyObject *fits,
                     int *delta, PyObject **lva_out, PyObject **other_out) {
    u128 nva_end = (u128)nva + size;
    int fit;
    *delta = 0;
    *lva_out = *other_out = NULL;
    if (nva < vs || nva_end > ve) return 0; /* NOTHING_FIT */
    if (vs == nva) fit = ((u128)ve == nva_end) ? 1 : 2; /* FL : LE */
    else if ((u128)ve == nva_end) fit = 3;             /* RE */
    else fit = 4;                                      /* NE */
    if (!PyList_CheckExact(fits) || PyList_GET_SIZE(fits) <= fit) {
        PyErr_SetString(PyExc_IndexError, "stats.fits is too short");
        return -1;
    }
    PyObject *cnt = PyNumber_Add(PyList_GET_ITEM(fits, fit), small_one);
    if (!cnt) return -1;
    PyList_SetItem(fits, fit, cnt); /* steals cnt */
    if (fit == 2 || fit == 4) {
        PyObject *lva = NULL;
        if (fit == 4) {
            lva = new_va(SLOT(va, off_start), nva_o);
            if (!lva) return -1;
        }
        PyObject *end_o = PyLong_FromUnsignedLongLong((unsigned long long)(uint64_t)nva_end);
        if (!end_o) { Py_XDECREF(lva); return -1; }
        set_slot(g, va, off_start, end_o);
        Py_DECREF(end_o);
        if (free_propagate(va, NULL) < 0) { Py_XDECREF(lva); return -1; }
        if (fit == 2) return fit;
        links_t L;
        int rc = descend_links(va, vs, nva, &L);
        if (rc < 0) { /* not OverflowError: va was already changed */
            PyErr_SetString(PyExc_RuntimeError, "va_clip: free tree values past 64 bits");
            Py_DECREF(lva);
            return -1;
        }
        if (rc == 1) {
            Py_INCREF(L.other);
            *lva_out = lva;
            *other_out = L.other;
            return fit;
        }
        rc = free_link(g, root, lva, L.parent, L.left);
        Py_DECREF(lva); /* the tree holds it */
        if (rc < 0) return -1;
        *delta = 1;
        return fit;
    }
    if (fit == 1) {
        if (free_unlink(g, root, va) < 0) return -1;
        *delta = -1;
        return fit;
    }
    /* RE */
    set_slot(g, va, off_end, nva_o);
    if (free_propagate(va, NULL) < 0) return -1;
    return fit;
}

/* va_clip(root, va, nva, size, fits) -> nr_free delta (int); None for NOTHING_FIT
 * (nothing changed: the caller's reference path warns); (lva, other) when the NE
 * split's left part overlaps a block (the caller complains). */
static PyObject *sp_va_clip(PyObject *self, PyObject *args) {
    PyObject *root, *va, *nva_o, *size_o, *fits, *lva, *other, *result = NULL;
    uint64_t vs, ve, nva, size;
    int delta;
    grave_t g;
    g.n = 0;
    if (!PyArg_ParseTuple(args, "OOOOO!", &root, &va, &nva_o, &size_o, &PyList_Type, &fits))
        return NULL;
    if (state_ready() < 0 || check_root(root) < 0 || check_va(va) < 0 ||
        check_node(va, "va") < 0)
        return NULL;
    if (!va_bounds(va, &vs, &ve) || !u64_of(nva_o, &nva) || !u64_of(size_o, &size)) {
        PyErr_SetString(PyExc_OverflowError, "va_clip values do not fit unsigned long");
        return NULL;
    }
    Py_INCREF(va);
    int fit = clip_core(&g, root, va, vs, ve, nva_o, nva, size, fits, &delta, &lva, &other);
    flush(&g);
    Py_DECREF(va);
    if (fit == 0) Py_RETURN_NONE;
    if (fit < 0) return NULL;
    if (lva != NULL) {
        result = Py_BuildValue("(OO)", lva, other);
        Py_DECREF(lva);
        Py_DECREF(other);
        return result;
    }
    return PyLong_FromLong(delta);
}

/* --- init ------------------------------------------------------------------------------ */
static int member_offset(PyTypeObject *t, const char *name, Py_ssize_t *out) {
    PyObject *d = PyDict_GetItemString(t->tp_dict, name); /* borrowed */
    if (!d || Py_TYPE(d) != &PyMemberDescr_Type) {
        PyErr_Format(PyExc_TypeError, "%.100s.%s is not a slot", t->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%.100s.%s is not an object slot", t->tp_name, name);
        return -1;
    }
    *out = m->offset;
    return 0;
}

static PyObject *sp_init_rbtree(PyObject *self, PyObject *args) {
    PyObject *node_t, *root_t;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &node_t, &PyType_Type, &root_t))
        return NULL;
    Py_ssize_t l, r, p, red, rt;
    if (member_offset((PyTypeObject *)node_t, "rb_left", &l) < 0 ||
        member_offset((PyTypeObject *)node_t, "rb_right", &r) < 0 ||
        member_offset((PyTypeObject *)node_t, "rb_parent", &p) < 0 ||
        member_offset((PyTypeObject *)node_t, "rb_red", &red) < 0 ||
        member_offset((PyTypeObject *)root_t, "rb_node", &rt) < 0)
        return NULL;
    Py_INCREF(node_t);
    Py_INCREF(root_t);
    Py_XSETREF(rbnode_type, (PyTypeObject *)node_t);
    Py_XSETREF(rbroot_type, (PyTypeObject *)root_t);
    off_left = l; off_right = r; off_parent = p; off_red = red; off_root = rt;
    Py_RETURN_NONE;
}

static PyObject *sp_init_vmap_area(PyObject *self, PyObject *args) {
    PyObject *t, *aug, *sfree, *sdet;
    if (!PyArg_ParseTuple(args, "O!OOO", &PyType_Type, &t, &aug, &sfree, &sdet)) return NULL;
    if (ready() < 0) return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)t, rbnode_type)) {
        PyErr_SetString(PyExc_TypeError, "the vmap area type must subclass RBNode");
        return NULL;
    }
    Py_ssize_t s, e, m, st;
    if (member_offset((PyTypeObject *)t, "va_start", &s) < 0 ||
        member_offset((PyTypeObject *)t, "va_end", &e) < 0 ||
        member_offset((PyTypeObject *)t, "subtree_max_size", &m) < 0 ||
        member_offset((PyTypeObject *)t, "state", &st) < 0)
        return NULL;
    Py_INCREF(sfree);
    Py_INCREF(sdet);
    Py_XSETREF(st_free, sfree);
    Py_XSETREF(st_detached, sdet);
    off_state = st;
    Py_INCREF(t);
    Py_INCREF(aug);
    Py_XSETREF(va_type, (PyTypeObject *)t);
    Py_XSETREF(free_augment, aug);
    off_start = s; off_end = e; off_sms = m;
    Py_RETURN_NONE;
}

static PyObject *sp_init_lowest_match(PyObject *self, PyObject *fn) {
    Py_INCREF(fn);
    Py_XSETREF(py_lowest, fn);
    Py_RETURN_NONE;
}

static PyObject *call_reference_lowest(PyObject *args) {
    if (py_lowest == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.init_lowest_match() was not called");
        return NULL;
    }
    return PyObject_Call(py_lowest, args, NULL);
}

/* =====================================================================================
 * Whole operations (helper speedcore). One C call for what a mechanism method of
 * vmap/space.py or vmap/purge.py does across its layers, for the kernel's own policies
 * (LowestMatch with NodePools or NoPools) only. Each function mirrors its Python method
 * step for step and returns None *before changing anything* when the call is not one
 * it mirrors exactly — a subclass of VmapSpace, another policy object, explain or
 * tracepoint observers, a value past 64 bits, a failure — and the caller then runs the
 * reference, so the results never differ.
 * ===================================================================================== */

static PyTypeObject *space_type = NULL, *lowest_match_type = NULL, *node_pools_type = NULL,
                    *no_pools_type = NULL, *deque_type = NULL;
static PyObject *st_busy = NULL, *st_lazy = NULL, *st_pool = NULL; /* VaState.* */
static PyObject *s_explain, *s_tp_alloc, *s_tp_free, *s_pools, *s_placement, *s_nr_busy,
    *s_last_pool_hit, *s_nr_free, *s_allocs, *s_pool_hits, *s_fits, *s_vmap_lazy_nr, *s_lazy,
    *s_lazy_frees, *s_c_consts, *s_popleft, *s_appendleft, *s_append, *s_nr_purged,
    *s_max_va_size_pages, *s_complain_overlap, *s_insert_vmap_area, *s_merge_py, *s_why,
    *minus_one;
static PyTypeObject *decision_type = NULL; /* vmap/area.py Decision */
static PyObject *s_last_decision, *s_pool_str, *s_tree_str;
/* deque's popleft, append, appendleft, rotate (method descriptors, called directly) */
static PyObject *dq_popleft = NULL, *dq_append = NULL, *dq_appendleft = NULL, *dq_rotate = NULL;

static inline PyObject *call1(PyObject *meth, PyObject *self_) {
    return PyObject_Vectorcall(meth, &self_, 1, NULL);
}
static inline PyObject *call2(PyObject *meth, PyObject *self_, PyObject *arg) {
    PyObject *a[2] = {self_, arg};
    return PyObject_Vectorcall(meth, a, 2, NULL);
}

/* VmapSpace._c_consts: the values of a space that never change after __init__. */
enum { C_FREE, C_ROOT, C_STATS, C_BUSY, C_POOLS, C_NODES, C_VNFLAGS, C_VSTART, C_VEND, C_UMAX,
       C_ZONE, C_ERRNO, C_ADJUST, C_SHIFT, C_EACH_STEP, C_LAZY_MAX, C_FREE_DICT, C_STATS_DICT,
       C_N };

typedef struct {
    PyObject *consts, *space_d, *free_d, *stats_d; /* new references */
    PyObject *free, *root, *busy, *pools, *nodes, *vnflags; /* borrowed from consts */
    Py_ssize_t n;
    uint64_t vstart, vend, umax, zone, lazy_max;
    int errno_errors, adjust, shift, each_step;
} ctx_t;

static void ctx_release(ctx_t *c) {
    Py_CLEAR(c->consts);
    Py_CLEAR(c->space_d);
    Py_CLEAR(c->free_d);
    Py_CLEAR(c->stats_d);
}

/* 1: `space` is a VmapSpace the whole operations mirror (c filled); 0: it is not (take
 * the reference); -1: error. */
static int ctx_get_ex(PyObject *space, ctx_t *c, int counters) {
    c->consts = c->space_d = c->free_d = c->stats_d = NULL;
    if (space_type == NULL || Py_TYPE(space) != space_type || va_ready() < 0 ||
        st_busy == NULL)
        goto no;
    c->space_d = PyObject_GenericGetDict(space, NULL);
    if (!c->space_d) goto no;
    PyObject *t = PyDict_GetItemWithError(c->space_d, s_c_consts);
    if (!t || !PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != C_N) goto no;
    Py_INCREF(t);
    c->consts = t;
    c->free = PyTuple_GET_ITEM(t, C_FREE);
    c->root = PyTuple_GET_ITEM(t, C_ROOT);
    c->busy = PyTuple_GET_ITEM(t, C_BUSY);
    c->pools = PyTuple_GET_ITEM(t, C_POOLS);
    c->nodes = PyTuple_GET_ITEM(t, C_NODES);
    c->vnflags = PyTuple_GET_ITEM(t, C_VNFLAGS);
    /* The cached free-tree root must still be the live one (vars(free)["root"]): a
     * caller that rebinds it gets the reference, never a stale tree. */
    PyObject *fd = PyTuple_GET_ITEM(t, C_FREE_DICT);
    if (!PyDict_CheckExact(fd)) goto no;
    if (PyDict_GetItemWithError(fd, s_root) != c->root) goto no;
    if (!PyObject_TypeCheck(c->root, rbroot_type) || !SLOT(c->root, off_root) ||
        !PyTuple_CheckExact(c->busy) || !PyTuple_CheckExact(c->pools) ||
        !PyTuple_CheckExact(c->nodes) || !PyTuple_CheckExact(c->vnflags))
        goto no;
    c->n = PyTuple_GET_SIZE(c->busy);
    if (c->n < 1 || PyTuple_GET_SIZE(c->pools) != c->n || PyTuple_GET_SIZE(c->nodes) != c->n ||
        PyTuple_GET_SIZE(c->vnflags) != c->n)
        goto no;
    for (Py_ssize_t i = 0; i < c->n; i++) {
        PyObject *r = PyTuple_GET_ITEM(c->busy, i);
        if (!PyObject_TypeCheck(r, rbroot_type) || !SLOT(r, off_root)) goto no;
    }
    if (!u64_of(PyTuple_GET_ITEM(t, C_VSTART), &c->vstart) ||
        !u64_of(PyTuple_GET_ITEM(t, C_VEND), &c->vend) ||
        !u64_of(PyTuple_GET_ITEM(t, C_UMAX), &c->umax) ||
        !u64_of(PyTuple_GET_ITEM(t, C_ZONE), &c->zone) || c->zone == 0 ||
        !u64_of(PyTuple_GET_ITEM(t, C_LAZY_MAX), &c->lazy_max) || c->umax < 4095)
        goto no;
    c->errno_errors = PyTuple_GET_ITEM(t, C_ERRNO) == Py_True;
    c->adjust = PyTuple_GET_ITEM(t, C_ADJUST) == Py_True;
    c->shift = PyTuple_GET_ITEM(t, C_SHIFT) == Py_True;
    c->each_step = PyTuple_GET_ITEM(t, C_EACH_STEP) == Py_True;
    if (!counters) return 1;
    /* vars(free) and vars(stats): neither object is ever replaced, nor its __dict__ */
    c->free_d = PyTuple_GET_ITEM(t, C_FREE_DICT);
    c->stats_d = PyTuple_GET_ITEM(t, C_STATS_DICT);
    if (!PyDict_CheckExact(c->free_d) || !PyDict_CheckExact(c->stats_d)) {
        c->free_d = c->stats_d = NULL;
        goto no;
    }
    Py_INCREF(c->free_d);
    Py_INCREF(c->stats_d);
    return 1;
no:
    ctx_release(c);
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError) &&
            !PyErr_ExceptionMatches(PyExc_TypeError))
            return -1;
        PyErr_Clear();
    }
    return 0;
}

static inline int ctx_get(PyObject *space, ctx_t *c) { return ctx_get_ex(space, c, 1); }

/* An exact int attribute of an instance dict (borrowed), or NULL (no error set). */
static inline PyObject *d_int(PyObject *d, PyObject *key) {
    PyObject *v = PyDict_GetItemWithError(d, key);
    return (v && PyLong_CheckExact(v)) ? v : NULL;
}

/* d[key] += delta, for an int attribute d_int() found. */
static int d_add(PyObject *d, PyObject *key, long long delta) {
    PyObject *cur = PyDict_GetItemWithError(d, key), *nv = NULL;
    if (!cur) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_AttributeError, key);
        return -1;
    }
    int of = 0;
    long long v = PyLong_CheckExact(cur) ? PyLong_AsLongLongAndOverflow(cur, &of) : 0;
    if (PyLong_CheckExact(cur) && !of && v > -(1LL << 62) && v < (1LL << 62) &&
        delta > -(1LL << 62) && delta < (1LL << 62)) {
        nv = PyLong_FromLongLong(v + delta);
    } else {
        PyObject *dd = PyLong_FromLongLong(delta);
        nv = dd ? PyNumber_Add(cur, dd) : NULL;
        Py_XDECREF(dd);
    }
    if (!nv) return -1;
    int rc = PyDict_SetItem(d, key, nv);
    Py_DECREF(nv);
    return rc;
}

/* _is_error_addr(addr, vend) with the space's error convention. */
static inline int is_error_addr(ctx_t *c, uint64_t addr, uint64_t vend) {
    return c->errno_errors ? addr > c->umax - 4095 : addr == vend;
}

/* The busy tree insert of VmapSpace.insert_vmap_area, for a va whose bounds are
 * (vs, ve): 1 linked, 0 not (overlap or values past 64 bits: nothing changed), -1. */
static int busy_link(grave_t *g, PyObject *root, PyObject *va, uint64_t vs, uint64_t ve) {
    uint64_t s, e;
    PyObject *node = get_node(root, off_root), *parent = NULL;
    int left = 0;
    while (node != NULL) {
        parent = node;
        if (!PyObject_TypeCheck(node, va_type) || !va_bounds(node, &s, &e)) return 0;
        if (ve <= s) {
            left = 1;
            node = get_node(node, off_left);
        } else if (vs >= e) {
            left = 0;
            node = get_node(node, off_right);
        } else
            return 0;
    }
    set_node(g, va, off_parent, parent);
    set_node(g, va, off_left, NULL);
    set_node(g, va, off_right, NULL);
    set_red(va, 1);
    if (parent == NULL)
        set_node(g, root, off_root, va);
    else
        set_node(g, parent, left ? off_left : off_right, va);
    aug_t a = {NULL};
    if (rb_insert_impl(g, va, root, &a) < 0) return -1;
    return 1;
}

/* alloc_vmap_area_once(space, size, align, vstart, vend, cpu, va_flags, vm) — mirrors
 * VmapSpace.alloc_vmap_area_once (vmap/space.py) with LowestMatch.find
 * (vmap/placement.py) and NodePools.node_alloc or NoPools (vmap/pools.py): the node's
 * pool head, or the lowest-match search + va_clip; then the busy insert and the
 * counters. Returns the busy area, or None (nothing changed) for the reference. */
static PyObject *sp_alloc_vmap_area_once(PyObject *self, PyObject *const *args,
                                         Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "alloc_vmap_area_once takes 8 arguments");
        return NULL;
    }
    PyObject *space = args[0], *va_flags_o = args[6], *vm = args[7];
    ctx_t c;
    int rc = ctx_get(space, &c);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    PyObject *head = NULL, *pool = NULL, *va = NULL, *result = NULL;
    grave_t g;
    g.n = 0;
    uint64_t size, align, vstart, vend, va_flags;
    int of = 0, rotate = 0;
    long cpu = PyLong_CheckExact(args[5]) ? PyLong_AsLongAndOverflow(args[5], &of) : -1;
    if (!u64_of(args[1], &size) || !u64_of(args[2], &align) || !u64_of(args[3], &vstart) ||
        !u64_of(args[4], &vend) || !u64_of(va_flags_o, &va_flags) || of || cpu < 0 ||
        size == 0 || (size & 4095) || align == 0 || (align & (align - 1)))
        goto fallback;
    /* what makes the call one the reference would run differently */
    /* explaining: the Decision the reference records (vmap/area.py), built at the end */
    PyObject *v = PyDict_GetItemWithError(c.space_d, s_explain);
    int explain = v == Py_True && decision_type != NULL;
    if (v != Py_False && !explain) goto fallback;
    long dec_node = -1, dec_pool = -1;
    int dec_rotated = 0, dec_fit = 0;
    uint64_t dec_len = 0, dec_bs = 0, dec_be = 0;
    v = PyDict_GetItemWithError(c.space_d, s_tp_alloc);
    if (!v || !PyList_CheckExact(v) || PyList_GET_SIZE(v) != 0) goto fallback;
    v = PyDict_GetItemWithError(c.free_d, s_why);
    if (v != Py_None) goto fallback;
    PyObject *pools_pol = PyDict_GetItemWithError(c.space_d, s_pools);
    PyObject *placement = PyDict_GetItemWithError(c.space_d, s_placement);
    if (!pools_pol || !placement || Py_TYPE(placement) != lowest_match_type ||
        (Py_TYPE(pools_pol) != node_pools_type && Py_TYPE(pools_pol) != no_pools_type))
        goto fallback;
    /* the counters (nr_busy, nr_free, stats.*) are read when they are updated: a model
     * without them fails in the reference too */
    PyObject *fits = PyDict_GetItemWithError(c.stats_d, s_fits);
    if (!fits || !PyList_CheckExact(fits) || PyList_GET_SIZE(fits) < 5) goto fallback;

    /* 6.x node_alloc: the pool of the CPU's node, for a full-range request */
    PyObject *vn_id_o = small_zero;
    if (c.n > 1 && vstart == c.vstart && vend == c.vend) {
        Py_ssize_t node_id = (Py_ssize_t)(cpu % c.n);
        vn_id_o = PyTuple_GET_ITEM(c.vnflags, node_id);
        if (Py_TYPE(pools_pol) == node_pools_type) {
            PyObject *pd = PyTuple_GET_ITEM(c.pools, node_id);
            if (!PyDict_CheckExact(pd)) goto fallback;
            PyObject *idx = PyLong_FromUnsignedLongLong((size - 1) >> 12);
            if (!idx) goto error;
            pool = PyDict_GetItemWithError(pd, idx);
            Py_DECREF(idx);
            if (pool) {
                if (Py_TYPE(pool) != deque_type) goto fallback;
                Py_INCREF(pool);
                Py_ssize_t len = PySequence_Size(pool);
                if (len < 0) goto error;
                if (len > 0) {
                    head = PySequence_GetItem(pool, 0);
                    if (!head) goto error;
                    uint64_t hs, he;
                    if (Py_TYPE(head) != va_type || !va_bounds(head, &hs, &he)) goto fallback;
                    dec_node = (long)node_id;
                    dec_pool = (long)((size - 1) >> 12);
                    if ((hs & (align - 1)) == 0) {
                        /* a bad pooled area: the reference raises */
                        if (he < hs || he - hs != size || hs < vstart || he > vend ||
                            is_error_addr(&c, hs, vend))
                            goto fallback;
                    } else {
                        rotate = dec_rotated = 1; /* to the tail once the search succeeded */
                        Py_CLEAR(head);
                    }
                }
            } else if (PyErr_Occurred())
                goto error;
        }
    }

    if (head != NULL) {
        /* --- commit: the pool's head (node_pool_del_va) --- */
        PyObject *r = call1(dq_popleft, pool);
        if (!r) goto error;
        Py_DECREF(r);
        set_state(&g, head, st_detached);
        if (d_add(c.stats_d, s_pool_hits, 1) < 0 ||
            PyDict_SetItem(c.space_d, s_last_pool_hit, Py_True) < 0)
            goto error;
        va = head;
        head = NULL;
    } else {
        /* __alloc_vmap_area with LowestMatch.find */
        int adjust = c.adjust ? !(align <= 4096 || (vend >= vstart && vend - vstart == size)) : 1;
        if (!c.shift && !adjust && align > 1) goto fallback; /* the reference raises */
        if (adjust && (u128)size + align - 1 > UINT64_MAX) goto fallback;
        dec_len = adjust ? size + align - 1 : size;
        PyObject *found = NULL;
        long visits = 0;
        if (!lowest_core(get_node(c.root, off_root), size, align, vstart, adjust, c.shift,
                         c.umax, &visits, &found) ||
            found == NULL)
            goto fallback; /* a value past 64 bits, or -ENOENT */
        uint64_t s, e;
        if (!va_bounds(found, &s, &e)) goto fallback;
        u128 base = s > vstart ? s : vstart;
        uint64_t nva = (uint64_t)((base + align - 1) & (u128)(~(align - 1) & c.umax));
        u128 nva_end = (u128)nva + size;
        if (nva_end > vend || nva < s || nva_end > e || is_error_addr(&c, nva, vend))
            goto fallback; /* -ERANGE, or a NOTHING_FIT the reference warns about */
        /* --- commit: the tree --- */
        if (rotate) {
            PyObject *r = call2(dq_rotate, pool, minus_one);
            if (!r) goto error;
            Py_DECREF(r);
        }
        if (d_add(c.stats_d, s_search_visits, visits) < 0 ||
            PyDict_SetItem(c.space_d, s_last_pool_hit, Py_False) < 0)
            goto error;
        PyObject *nva_o = PyLong_FromUnsignedLongLong(nva);
        PyObject *end_o = nva_o ? PyLong_FromUnsignedLongLong((uint64_t)nva_end) : NULL;
        if (!end_o) { Py_XDECREF(nva_o); goto error; }
        int delta = 0;
        PyObject *lva = NULL, *other = NULL;
        Py_INCREF(found);
        int fit = clip_core(&g, c.root, found, s, e, nva_o, nva, size, fits, &delta, &lva,
                            &other);
        flush(&g);
        Py_DECREF(found);
        if (fit > 0 && d_add(c.free_d, s_nr_free, delta) < 0) fit = -1;
        if (fit > 0 && lva != NULL) { /* the NE split's left part overlaps: complain */
            PyObject *r = PyObject_CallMethodObjArgs(c.free, s_complain_overlap, lva, other, NULL);
            if (!r) fit = -1;
            Py_XDECREF(r);
        }
        Py_XDECREF(lva);
        Py_XDECREF(other);
        if (fit > 0) va = new_va(nva_o, end_o);
        dec_fit = fit;
        dec_bs = s;
        dec_be = e;
        Py_DECREF(nva_o);
        Py_DECREF(end_o);
        if (fit <= 0 || va == NULL) {
            if (fit == 0) PyErr_SetString(PyExc_RuntimeError, "va_clip: NOTHING_FIT after checks");
            goto error;
        }
    }

    if (explain) { /* last_decision = Decision(...), as the reference fills it */
        PyObject *da[8];
        int pool_hit = dec_fit == 0;
        da[0] = pool_hit ? s_pool_str : s_tree_str;
        Py_INCREF(da[0]);
        da[1] = PyLong_FromLong(dec_node);
        da[2] = PyLong_FromLong(dec_pool);
        da[3] = dec_rotated ? Py_True : Py_False;
        Py_INCREF(da[3]);
        da[4] = pool_hit ? Py_BuildValue("(ii)", 0, 0) : Py_BuildValue("(KK)", dec_bs, dec_be);
        da[5] = PyLong_FromLong(dec_fit);
        da[6] = PyLong_FromUnsignedLongLong(dec_len);
        da[7] = small_zero;
        Py_INCREF(da[7]);
        PyObject *dec = NULL;
        if (da[1] && da[2] && da[4] && da[5] && da[6])
            dec = PyObject_Vectorcall((PyObject *)decision_type, da, 8, NULL);
        for (int i = 0; i < 8; i++) Py_XDECREF(da[i]);
        if (!dec) goto error;
        int rc2 = PyDict_SetItem(c.space_d, s_last_decision, dec);
        Py_DECREF(dec);
        if (rc2 < 0) goto error;
    }

    /* va.vm, va.flags, insert_vmap_area, stats.allocs */
    set_slot(&g, va, off_vm, vm);
    if (va_flags) {
        PyObject *f = PyNumber_Or(va_flags_o, vn_id_o);
        if (!f) goto error;
        set_slot(&g, va, off_flags, f);
        Py_DECREF(f);
    } else
        set_slot(&g, va, off_flags, vn_id_o);
    uint64_t vs, ve;
    int linked = 0;
    if (va_bounds(va, &vs, &ve)) {
        Py_ssize_t bi = c.n > 1 ? (Py_ssize_t)((vs / c.zone) % (uint64_t)c.n) : 0;
        linked = busy_link(&g, PyTuple_GET_ITEM(c.busy, bi), va, vs, ve);
        if (linked < 0) goto error;
    }
    if (linked) {
        set_state(&g, va, st_busy);
        if (d_add(c.space_d, s_nr_busy, 1) < 0) goto error;
    } else { /* an overlap: the reference complains and raises */
        PyObject *r = PyObject_CallMethodOneArg(space, s_insert_vmap_area, va);
        if (!r) goto error;
        Py_DECREF(r);
    }
    if (d_add(c.stats_d, s_allocs, 1) < 0) goto error;
    result = va;
    va = NULL;
    goto out;
fallback:
    if (PyErr_Occurred()) goto error;
    result = Py_None;
    Py_INCREF(result);
    goto out;
error:
    result = NULL;
out:
    flush(&g);
    Py_XDECREF(va);
    Py_XDECREF(head);
    Py_XDECREF(pool);
    ctx_release(&c);
    return result;
}

/* free_vmap_area_noflush(space, va) — mirrors VmapSpace.free_vmap_area_noflush
 * (vmap/space.py) up to the lazy threshold: vmap_lazy_nr, the lazy FIFO, the counter.
 * Returns False (queued), True (queued, and vmap_lazy_nr is past lazy_max_pages: the
 * caller starts the purge), or None (nothing changed) for the reference. */
static PyObject *sp_free_vmap_area_noflush(PyObject *self, PyObject *const *args,
                                           Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "free_vmap_area_noflush takes 2 arguments");
        return NULL;
    }
    PyObject *va = args[1], *result = NULL;
    ctx_t c;
    int rc = ctx_get(args[0], &c);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    grave_t g;
    g.n = 0;
    uint64_t vs, ve, lazy_nr;
    PyObject *tp = PyDict_GetItemWithError(c.space_d, s_tp_free);
    PyObject *lazy = PyDict_GetItemWithError(c.space_d, s_lazy);
    PyObject *nr_o = d_int(c.space_d, s_vmap_lazy_nr);
    if (!tp || !PyList_CheckExact(tp) || PyList_GET_SIZE(tp) != 0 || !lazy ||
        Py_TYPE(lazy) != deque_type || !nr_o || !u64_of(nr_o, &lazy_nr) ||
        !d_int(c.stats_d, s_lazy_frees) || Py_TYPE(va) != va_type ||
        SLOT(va, off_state) != st_detached || !va_bounds(va, &vs, &ve) || ve < vs)
        goto fallback; /* observers, a linked area (the reference WARNs), odd values */
    u128 nr_lazy = (u128)lazy_nr + ((ve - vs) >> 12);
    if (nr_lazy > UINT64_MAX) goto fallback;
    PyObject *nr_new = PyLong_FromUnsignedLongLong((uint64_t)nr_lazy);
    if (!nr_new) goto error;
    rc = PyDict_SetItem(c.space_d, s_vmap_lazy_nr, nr_new);
    Py_DECREF(nr_new);
    if (rc < 0) goto error;
    set_state(&g, va, st_lazy);
    set_slot(&g, va, off_vm, Py_None);
    PyObject *r = call2(dq_append, lazy, va);
    if (!r) goto error;
    Py_DECREF(r);
    if (d_add(c.stats_d, s_lazy_frees, 1) < 0) goto error;
    result = nr_lazy > c.lazy_max ? Py_True : Py_False;
    Py_INCREF(result);
    goto out;
fallback:
    if (PyErr_Occurred()) goto error;
    result = Py_None;
    Py_INCREF(result);
    goto out;
error:
    result = NULL;
out:
    flush(&g);
    ctx_release(&c);
    return result;
}

/* find_unlink_vmap_area(space, addr) — mirrors the usual case of
 * VmapSpace.find_unlink_vmap_area (vmap/space.py): the busy area containing addr in
 * its address's node, erased with its links cleared, state DETACHED, nr_busy - 1.
 * None when that node has none or the call is not one it mirrors (nothing changed):
 * the reference then searches every node. */
static PyObject *sp_find_unlink_vmap_area(PyObject *self, PyObject *const *args,
                                          Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "find_unlink_vmap_area takes 2 arguments");
        return NULL;
    }
    ctx_t c;
    int rc = ctx_get_ex(args[0], &c, 0);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    PyObject *result = NULL, *node;
    uint64_t addr, s, e;
    if (!u64_of(args[1], &addr)) goto fallback;
    Py_ssize_t bi = c.n > 1 ? (Py_ssize_t)((addr / c.zone) % (uint64_t)c.n) : 0;
    PyObject *root = PyTuple_GET_ITEM(c.busy, bi);
    node = get_node(root, off_root);
    while (node != NULL) {
        if (Py_TYPE(node) != va_type || !va_bounds(node, &s, &e)) goto fallback;
        if (addr < s)
            node = get_node(node, off_left);
        else if (addr >= e)
            node = get_node(node, off_right);
        else
            break;
    }
    if (node == NULL || check_node(node, "node") < 0) goto fallback;
    grave_t g;
    g.n = 0;
    aug_t a = {NULL};
    PyObject *rebalance = NULL;
    Py_INCREF(node); /* returned */
    rc = rb_erase_impl(&g, node, root, &a, &rebalance);
    if (rc == 0 && rebalance != NULL) rc = rb_erase_color_impl(&g, rebalance, root, &a);
    if (rc == 0) {
        set_node(&g, node, off_parent, NULL);
        set_node(&g, node, off_left, NULL);
        set_node(&g, node, off_right, NULL);
        set_state(&g, node, st_detached);
        rc = d_add(c.space_d, s_nr_busy, -1);
    }
    flush(&g);
    if (rc < 0) {
        Py_DECREF(node);
        goto error;
    }
    result = node;
    goto out;
fallback:
    if (PyErr_Occurred()) goto error;
    result = Py_None;
    Py_INCREF(result);
    goto out;
error:
    result = NULL;
out:
    ctx_release(&c);
    return result;
}

/* Give va back to the free tree as FreeTree.merge_or_add_vmap_area_augment does, with
 * the counter; values past 64 bits and overlaps go through the Python method (which
 * handles them, nothing having changed). 0 or -1. */
static int merge_back(ctx_t *c, PyObject *va) {
    grave_t g;
    g.n = 0;
    PyObject *block = NULL;
    int delta = 0;
    int rc = merge_core(&g, c->root, va, c->each_step, &block, &delta);
    flush(&g);
    if (rc == 0) return d_add(c->free_d, s_nr_free, delta);
    if (rc == -1) return -1;
    PyObject *r = PyObject_CallMethodOneArg(c->free, s_merge_py, va);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

/* purge_vmap_node(space, vn, purge_list, skip_populate) — mirrors
 * LazyPurge._purge_vmap_node (vmap/purge.py) with NodePools.populate or NoPools
 * (vmap/pools.py): refill the node's pools, count the pages, merge the rest into the
 * free tree in descending order. With vn None it is 5.4's loop in
 * LazyPurge.finish_purge instead (no nodes, no pools: every area merged, newest
 * first). True when done; None (nothing changed) for the reference. */
static PyObject *sp_purge_vmap_node(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "purge_vmap_node takes 4 arguments");
        return NULL;
    }
    PyObject *vn = args[1], *lst = args[2], *result = NULL, *vn_d = NULL, *pd = NULL;
    PyObject **local = NULL;
    int skip = PyObject_IsTrue(args[3]);
    if (skip < 0) return NULL;
    ctx_t c;
    int rc = ctx_get(args[0], &c);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    uint64_t max_pages = 0, lazy_nr, s = 0, e = 0, f = 0;
    PyObject *pools_pol = PyDict_GetItemWithError(c.space_d, s_pools);
    PyObject *nr_o = d_int(c.space_d, s_vmap_lazy_nr);
    if (!pools_pol || !nr_o || !u64_of(nr_o, &lazy_nr) || !PyList_CheckExact(lst)) goto fallback;
    int node_pools = Py_TYPE(pools_pol) == node_pools_type;
    if (!node_pools && Py_TYPE(pools_pol) != no_pools_type) goto fallback;
    if (node_pools) {
        PyObject *m = PyObject_GetAttr(pools_pol, s_max_va_size_pages);
        if (!m) goto fallback;
        int ok = u64_of(m, &max_pages);
        Py_DECREF(m);
        if (!ok) goto fallback;
    }
    if (vn == Py_None) {
        skip = 1;
    } else {
        vn_d = PyObject_GenericGetDict(vn, NULL);
        if (!vn_d) goto fallback;
        pd = PyDict_GetItemWithError(vn_d, s_pools);
        if (!pd || !PyDict_CheckExact(pd) || !d_int(vn_d, s_nr_purged)) goto fallback;
        Py_INCREF(pd);
    }
    Py_ssize_t n = PyList_GET_SIZE(lst);
    u128 nr_pages = 0;
    for (Py_ssize_t i = 0; i < n; i++) { /* every value checked before anything changes */
        PyObject *va = PyList_GET_ITEM(lst, i);
        if (Py_TYPE(va) != va_type || !va_bounds(va, &s, &e) || e <= s ||
            !u64_of(SLOT(va, off_flags), &f))
            goto fallback;
        nr_pages += (e - s) >> 12;
    }
    if (nr_pages > lazy_nr) goto fallback; /* the reference would go negative */
    Py_INCREF(lst);
    local = PyMem_Malloc(sizeof(PyObject *) * (n ? n : 1));
    if (!local) { Py_DECREF(lst); PyErr_NoMemory(); goto error; }
    Py_ssize_t nlocal = 0;
    int err = 0;
    for (Py_ssize_t i = 0; i < n && !err; i++) {
        PyObject *va = PyList_GET_ITEM(lst, i);
        grave_t g;
        g.n = 0;
        set_state(&g, va, st_detached);
        flush(&g);
        va_bounds(va, &s, &e);
        u64_of(SLOT(va, off_flags), &f);
        uint64_t tag = f >> 8; /* decode_vn_id(flags) + 1 */
        if (!skip && node_pools && tag >= 1 && tag - 1 < (uint64_t)c.n) {
            uint64_t idx = (e - s - 1) >> 12; /* NodePools.populate */
            if (idx < max_pages) {
                PyObject *key = PyLong_FromUnsignedLongLong(idx), *pool = NULL;
                if (!key) { err = 1; break; }
                pool = PyDict_GetItemWithError(pd, key);
                if (pool) Py_INCREF(pool);
                else if (!PyErr_Occurred()) {
                    pool = PyObject_CallNoArgs((PyObject *)deque_type);
                    if (pool && PyDict_SetItem(pd, key, pool) < 0) Py_CLEAR(pool);
                }
                Py_DECREF(key);
                PyObject *r = pool ? call2(dq_appendleft, pool, va) : NULL;
                Py_XDECREF(pool);
                if (!r) { err = 1; break; }
                Py_DECREF(r);
                g.n = 0;
                set_state(&g, va, st_pool);
                flush(&g);
                continue;
            }
        }
        local[nlocal++] = va;
    }
    if (!err) {
        err = (vn_d != NULL && d_add(vn_d, s_nr_purged, n) < 0) ||
              d_add(c.space_d, s_vmap_lazy_nr, -(long long)(uint64_t)nr_pages) < 0;
    }
    /* list_add() onto the local list reversed it: merge in descending order */
    for (Py_ssize_t i = nlocal - 1; i >= 0 && !err; i--) err = merge_back(&c, local[i]) < 0;
    PyMem_Free(local);
    Py_DECREF(lst);
    if (err) goto error;
    result = Py_True;
    Py_INCREF(result);
    goto out;
fallback:
    if (PyErr_Occurred()) goto error;
    result = Py_None;
    Py_INCREF(result);
    goto out;
error:
    result = NULL;
out:
    Py_XDECREF(pd);
    Py_XDECREF(vn_d);
    ctx_release(&c);
    return result;
}

/* pvm_find_va_enclose_addr(root, addr) — mirrors FreeTree.pvm_find_va_enclose_addr
 * (vmap/freetree.py): the block with the highest start at or below addr, or None.
 * OverflowError (nothing read) for values past 64 bits: the caller runs the reference. */
static PyObject *sp_pvm_find_va_enclose_addr(PyObject *self, PyObject *const *args,
                                             Py_ssize_t nargs) {
    uint64_t addr, s, e;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "pvm_find_va_enclose_addr takes 2 arguments");
        return NULL;
    }
    if (va_ready() < 0 || check_root(args[0]) < 0) return NULL;
    if (!u64_of(args[1], &addr)) goto overflow;
    PyObject *node = get_node(args[0], off_root), *va = Py_None;
    while (node != NULL) {
        if (!PyObject_TypeCheck(node, va_type) || !va_bounds(node, &s, &e)) goto overflow;
        if (s <= addr) {
            va = node;
            if (e >= addr) break;
            node = get_node(node, off_right);
        } else
            node = get_node(node, off_left);
    }
    Py_INCREF(va);
    return va;
overflow:
    PyErr_SetString(PyExc_OverflowError, "free tree values do not fit unsigned long");
    return NULL;
}

/* new_vmap_area(start, end): VmapArea(start, end) as the whole operations build it
 * (for the differential test). */
static PyObject *sp_new_vmap_area(PyObject *self, PyObject *args) {
    PyObject *s, *e;
    if (!PyArg_ParseTuple(args, "OO", &s, &e)) return NULL;
    if (va_ready() < 0) return NULL;
    return new_va(s, e);
}

/* init_space(VmapSpace, LowestMatch, NodePools, NoPools, deque, Decision, VaState.BUSY,
 * VaState.LAZY, VaState.POOL): the types and values the whole operations recognise. */
static PyObject *sp_init_space(PyObject *self, PyObject *args) {
    PyObject *sp_t, *lm_t, *np_t, *nop_t, *dq_t, *dec_t, *busy, *lazy, *pool;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!OOO", &PyType_Type, &sp_t, &PyType_Type, &lm_t,
                          &PyType_Type, &np_t, &PyType_Type, &nop_t, &PyType_Type, &dq_t,
                          &PyType_Type, &dec_t, &busy, &lazy, &pool))
        return NULL;
    if (va_ready() < 0) return NULL;
    Py_ssize_t vm, fl;
    if (member_offset(va_type, "vm", &vm) < 0 || member_offset(va_type, "flags", &fl) < 0)
        return NULL;
    off_vm = vm;
    off_flags = fl;
    /* new_va() may fill the slots itself only if they are all the object holds */
    Py_ssize_t offs[10] = {off_left, off_right, off_parent, off_red, off_start,
                           off_end,  off_sms,   off_state,  off_vm,  off_flags};
    int distinct = 1;
    for (int i = 0; i < 10; i++)
        for (int j = i + 1; j < 10; j++)
            if (offs[i] == offs[j]) distinct = 0;
    va_fast_new = distinct && va_type->tp_dictoffset == 0 && va_type->tp_weaklistoffset == 0 &&
                  va_type->tp_basicsize == (Py_ssize_t)(sizeof(PyObject) + 10 * sizeof(PyObject *)) &&
                  va_type->tp_alloc == PyType_GenericAlloc;
#define KEEP(var, obj) do { Py_INCREF(obj); Py_XSETREF(var, obj); } while (0)
    KEEP(space_type, (PyTypeObject *)sp_t);
    KEEP(lowest_match_type, (PyTypeObject *)lm_t);
    KEEP(node_pools_type, (PyTypeObject *)np_t);
    KEEP(no_pools_type, (PyTypeObject *)nop_t);
    KEEP(deque_type, (PyTypeObject *)dq_t);
    KEEP(decision_type, (PyTypeObject *)dec_t);
    PyObject *meths[4];
    const char *names[4] = {"popleft", "append", "appendleft", "rotate"};
    for (int i = 0; i < 4; i++) {
        meths[i] = PyObject_GetAttrString(dq_t, names[i]);
        if (!meths[i]) {
            while (--i >= 0) Py_DECREF(meths[i]);
            return NULL;
        }
    }
    Py_XSETREF(dq_popleft, meths[0]);
    Py_XSETREF(dq_append, meths[1]);
    Py_XSETREF(dq_appendleft, meths[2]);
    Py_XSETREF(dq_rotate, meths[3]);
    KEEP(st_busy, busy);
    KEEP(st_lazy, lazy);
    KEEP(st_pool, pool);
#undef KEEP
    Py_RETURN_NONE;
}

static int init_whole_ops_strings(void) {
#define S(var, text) if (!((var) = PyUnicode_InternFromString(text))) return -1
    S(s_explain, "explain"); S(s_tp_alloc, "tp_alloc"); S(s_tp_free, "tp_free");
    S(s_pools, "pools"); S(s_placement, "placement"); S(s_nr_busy, "nr_busy");
    S(s_last_pool_hit, "last_pool_hit"); S(s_nr_free, "nr_free"); S(s_allocs, "allocs");
    S(s_pool_hits, "pool_hits"); S(s_fits, "fits"); S(s_vmap_lazy_nr, "vmap_lazy_nr");
    S(s_lazy, "lazy"); S(s_lazy_frees, "lazy_frees"); S(s_c_consts, "_c_consts");
    S(s_popleft, "popleft"); S(s_appendleft, "appendleft"); S(s_append, "append");
    S(s_nr_purged, "nr_purged"); S(s_max_va_size_pages, "max_va_size_pages");
    S(s_complain_overlap, "complain_overlap"); S(s_insert_vmap_area, "insert_vmap_area");
    S(s_merge_py, "merge_or_add_vmap_area_augment"); S(s_why, "why");
    S(s_last_decision, "last_decision"); S(s_pool_str, "pool"); S(s_tree_str, "tree");
#undef S
    minus_one = PyLong_FromLong(-1);
    return minus_one ? 0 : -1;
}
/* speedvm section (defined at the end of the file) */
static PyObject *vm_phys_prep_bulk(PyObject *, PyObject *);
static PyObject *vm_phys_free_bulk_mark(PyObject *, PyObject *);
static PyObject *vm_deque_popleft_into(PyObject *, PyObject *);
static PyObject *vm_pte_fill(PyObject *, PyObject *);
static PyObject *vm_init_trace_events(PyObject *, PyObject *);
static PyObject *vm_parse_tracefs(PyObject *, PyObject *);

/* =====================================================================================
 * replay (helper replayspeed). The walk of trace/beliefs.py's Beliefs.mark_passed_over,
 * which a replay's tree-shape mismatch spends most of its time in: the free blocks from
 * one down (in-order predecessors), at most `limit` of them, while they end above `lo`.
 * It only reads; the reference (beliefs.short_fitting_below) is the Python twin, and the
 * caller runs it when this returns None (a value past 64 bits, or not a VmapArea).
 * ===================================================================================== */

/* short_fitting_below(blk, lo, hi, size, align, length, limit, ulong_max) -> list | None:
 * the (va_start, va_end) of each block walked that is shorter than `length`, lies in
 * [lo, hi) and takes `size` bytes once its start is aligned to `align`; highest first. */
static PyObject *sp_short_fitting_below(PyObject *self, PyObject *const *args,
                                        Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "short_fitting_below takes 8 arguments");
        return NULL;
    }
    if (ready() < 0 || va_ready() < 0) return NULL;
    uint64_t lo, hi, size, align, length, umax;
    long limit = PyLong_Check(args[6]) ? PyLong_AsLong(args[6]) : -1;
    if (limit == -1 && PyErr_Occurred()) return NULL;
    if (!u64_of(args[1], &lo) || !u64_of(args[2], &hi) || !u64_of(args[3], &size) ||
        !u64_of(args[4], &align) || !u64_of(args[5], &length) || !u64_of(args[7], &umax) ||
        align == 0 || limit < 0)
        Py_RETURN_NONE;
    u128 mask = ~((u128)align - 1) & (u128)umax;
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    PyObject *blk = args[0] == Py_None ? NULL : args[0];
    for (long i = 0; i < limit && blk != NULL; i++) {
        uint64_t s, e;
        if (!PyObject_TypeCheck(blk, va_type) || !va_bounds(blk, &s, &e) || e < s) {
            Py_DECREF(out);
            Py_RETURN_NONE; /* the reference decides */
        }
        if (e <= lo) break;
        if (e - s < length && e <= hi && s >= lo &&
            (((u128)s + align - 1) & mask) + size <= (u128)e) {
            PyObject *key = PyTuple_Pack(2, SLOT(blk, off_start), SLOT(blk, off_end));
            if (key == NULL || PyList_Append(out, key) < 0) {
                Py_XDECREF(key);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(key);
        }
        /* rb_prev(blk) */
        PyObject *n = get_node(blk, off_left);
        if (n != NULL) {
            PyObject *r;
            while ((r = get_node(n, off_right)) != NULL) n = r;
            blk = n;
        } else {
            n = get_node(blk, off_parent);
            while (n != NULL && blk == get_node(n, off_left)) {
                blk = n;
                n = get_node(n, off_parent);
            }
            blk = n;
        }
    }
    return out;
}

/* search_skipping's fits(): the block takes the request once aligned, and no belief
 * says the kernel's search for this length does not reach it. 1 yes, 0 no, -1 error,
 * -2 decline (a value past 64 bits). */
static int skip_fits(PyObject *n, u128 vstart, uint64_t size, uint64_t align, uint64_t length,
                     PyObject *length_o, uint64_t umax, PyObject *bad, int has_high,
                     uint64_t high, PyObject *old) {
    uint64_t s, e;
    if (!va_bounds(n, &s, &e)) return -2;
    u128 mask = ~((u128)align - 1) & (u128)umax;
    u128 nva = (((u128)s > vstart ? (u128)s : vstart) + align - 1) & mask;
    u128 end = nva + size;
    if (end > (u128)umax || nva < vstart || end > (u128)e) return 0;
    int need_old = has_high && s < high && e - s < length;
    if (PyDict_GET_SIZE(bad) == 0 && !need_old) return 1;
    PyObject *key = PyTuple_Pack(2, SLOT(n, off_start), SLOT(n, off_end));
    if (key == NULL) return -1;
    int r = 1;
    if (PyDict_GET_SIZE(bad) > 0) {
        PyObject *lengths = PyDict_GetItemWithError(bad, key); /* borrowed */
        if (lengths != NULL) {
            int in = PySequence_Contains(lengths, length_o);
            if (in < 0) r = -1;
            else if (in) r = 0;
        } else if (PyErr_Occurred())
            r = -1;
    }
    if (r == 1 && need_old) {
        int in = PySequence_Contains(old, key);
        if (in < 0) r = -1;
        else if (in) r = 0;
    }
    Py_DECREF(key);
    return r;
}

/* search_skipping(root_node, size, align, vstart, length, ulong_max, unreachable, high,
 * old_blocks) -> va | None: Beliefs.search_skipping's descent (trace/beliefs.py, the
 * reference), reading only; OverflowError for a value past 64 bits (the caller then runs
 * the reference). */
static PyObject *sp_search_skipping(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "search_skipping takes 9 arguments");
        return NULL;
    }
    if (ready() < 0 || va_ready() < 0) return NULL;
    uint64_t size, align, vs, length, umax, high = 0, sms;
    PyObject *bad = args[6], *old = args[8], *length_o = args[4];
    int has_high = args[7] != Py_None;
    if (!u64_of(args[1], &size) || !u64_of(args[2], &align) || !u64_of(args[3], &vs) ||
        !u64_of(length_o, &length) || !u64_of(args[5], &umax) || align == 0 ||
        (has_high && !u64_of(args[7], &high)) || !PyDict_Check(bad))
        goto decline;
    u128 vstart = vs;
    PyObject *node = args[0] == Py_None ? NULL : args[0];
#define CHECK_VA(x) if (!PyObject_TypeCheck((x), va_type)) goto decline
#define FITS(x)                                                                         \
    do {                                                                                \
        int f_ = skip_fits((x), vstart, size, align, length, length_o, umax, bad,       \
                           has_high, high, old);                                        \
        if (f_ == -1) return NULL;                                                      \
        if (f_ == -2) goto decline;                                                     \
        if (f_ == 1) { Py_INCREF((x)); return (x); }                                    \
    } while (0)
    while (node != NULL) {
        CHECK_VA(node);
        uint64_t s;
        if (!u64_of(SLOT(node, off_start), &s)) goto decline;
        PyObject *left = get_node(node, off_left);
        if (left != NULL) {
            CHECK_VA(left);
            if (!u64_of(SLOT(left, off_sms), &sms)) goto decline;
            if (sms >= length && vstart < (u128)s) {
                node = left;
                continue;
            }
        }
        FITS(node);
        PyObject *right = get_node(node, off_right);
        if (right != NULL) {
            CHECK_VA(right);
            if (!u64_of(SLOT(right, off_sms), &sms)) goto decline;
            if (sms >= length) {
                node = right;
                continue;
            }
        }
        for (;;) {
            node = get_node(node, off_parent);
            if (node == NULL) Py_RETURN_NONE;
            CHECK_VA(node);
            FITS(node);
            right = get_node(node, off_right);
            if (!u64_of(SLOT(node, off_start), &s)) goto decline;
            if (right != NULL) {
                CHECK_VA(right);
                if (!u64_of(SLOT(right, off_sms), &sms)) goto decline;
                if (sms >= length && vstart <= (u128)s) {
                    vstart = (u128)s + 1;
                    node = right;
                    break;
                }
            }
        }
    }
    Py_RETURN_NONE;
#undef CHECK_VA
#undef FITS
decline:
    PyErr_SetString(PyExc_OverflowError, "search_skipping: a value the compiled walk declines");
    return NULL;
}

/* =====================================================================================
 * whole vmalloc/vfree (helper vmallocc). vmalloc()/vzalloc() and vfree() of the vmalloc
 * layer (vmalloc.py) in one C call each, for the common case only: no explain recorder,
 * not in interrupt context, not strict, GFP_KERNEL (with or without __GFP_ZERO), any
 * node, a size whose pages array fits in one kmalloc object, and a profile whose
 * vmalloc path is 6.x's (__vmalloc_node_range with the v5.13+ warnings, bulk page
 * allocation, vmap_pages_range, no __vunmap helper). The checks run before anything
 * changes; anything else returns None and vmalloc.py runs the reference. The C code
 * does what the reference's vmalloc-layer frames do between their calls into the
 * layers below, and makes the same calls into those layers (kmalloc/kfree,
 * alloc_vmap_area, alloc_pages/free_pages, map_pages/unmap, find/unlink/free of the
 * vmap area) with the same arguments in the same order: the lower layers keep their own
 * compiled twins, so the state they change is theirs, unchanged. The failure branches
 * (warn_alloc texts, free_vm_area, the vfree of a half-built area) call the reference's
 * methods.
 * ===================================================================================== */

static PyTypeObject *vw_vmstruct_type = NULL, *vw_vmaparea_type = NULL;
static PyObject *vw_np_array = NULL, *vw_np_int64 = NULL, *vw_np_empty = NULL;
static PyObject *vw_kw_dtype = NULL, *vw_kw_cpu = NULL, *vw_kw_alloc = NULL;
static PyObject *vw_vm_flags_alloc = NULL; /* VM_ALLOC | VM_UNINITIALIZED */
static PyObject *vw_numa_no_node = NULL;   /* NUMA_NO_NODE */
static PyObject *vw_space_globals = NULL;  /* pyvmalloc.vmap.space.__dict__ */

enum { W_C_WHOLE, W_EXPLAIN, W_STRICT, W_IN_INTERRUPT, W_AFTER_CALL, W_DEPTH, W_PENDING,
       W_HUNG, W_RAISE_HELD, W_TOTALRAM, W_KMALLOC, W_KFREE, W_ALLOC_VMAP_AREA, W_VA_START,
       W_VA_END, W_VM, W_ADDR, W_SIZE, W_REQUESTED_SIZE, W_PAGES_ADDR, W_PAGE_ORDER,
       W_PAGES, W_NR_PAGES, W_NR_VMALLOC_PAGES, W_ALLOC_PAGES, W_VM_AREA_ALLOC_PAGES,
       W_PTES_WRITTEN, W_MAP_PAGES, W_FLAGS, W_WARN_ALLOC, W_FREE_VM_AREA,
       W_VMALLOC_AREA_FAIL, W_STATS, W_VMALLOC, W_FAILURES, W_VFREE, W_FIND_VMAP_AREA,
       W_FIND_UNLINK, W_UNMAP, W_FREE_NOFLUSH, W_USER_MAPPED, W_UNMAP_USER_PAGES,
       W_FREE_PAGES, W_FREE_PAGES_BULK, W_TOLIST, W_KADDR, W_WARN, W_PMD_SHIFT,
       W_PTE_ENTRIES, W_SUPPORTED_PTE_MASK, W_PTECACHE, W_C_ALLOC_ONCE, W_C_FIND_UNLINK,
       W_C_FREE_NOFLUSH, W_LAZY_PASSED, W_ZL_GFP, W_FREE_PAGES_ATTR, W_WMARK,
       W_LOWMEM_RESERVE, W_PCP, W_PCP_HIGH, W_PFLAGS, W_PORDER, W_PREFCOUNT, W_POWNER,
       W_PZONE, W_ZONES, W_DATA, W_MAX_PFN, W_POP_NAME, W_SIZE_CACHE, W_PARTIAL, W_SFREE,
       W_FRESH, W_FREE_MAP, W_INUSE, W_OBJECTS, W_ACTIVE_OBJS, W_SLAB_BYTES, W_NR_ALLOCS,
       W_ZERO_M, W_PFN, W_PAGE_OFFSET, W_MAX_LOW_PFN, W_PAGE_SLAB, W_CACHES, W_TOTALRAM_MEMO,
       W_ALLOC_PAGES_BULK, W_N };

static const char *vw_names[W_N] = {
    "_c_whole", "explain", "strict", "_in_interrupt", "_after_call", "depth", "pending",
    "hung", "raise_held", "totalram_pages", "kmalloc", "kfree", "alloc_vmap_area",
    "va_start", "va_end", "vm", "addr", "size", "requested_size", "pages_addr",
    "page_order", "pages", "nr_pages", "nr_vmalloc_pages", "alloc_pages",
    "vm_area_alloc_pages", "ptes_written", "map_pages", "flags", "_warn_alloc",
    "free_vm_area", "_vmalloc_area_fail", "stats", "vmalloc", "failures", "vfree",
    "find_vmap_area", "find_unlink_vmap_area", "unmap", "free_vmap_area_noflush",
    "user_mapped", "_unmap_user_pages", "free_pages", "free_pages_bulk", "tolist", "kaddr",
    "WARN", "pmd_shift", "pte_entries", "supported_pte_mask", "_ptecache", "_c_alloc_once",
    "_c_find_unlink", "_c_free_noflush", "_lazy_threshold_passed", "_zl_gfp", "free_pages",
    "wmark", "lowmem_reserve", "pcp", "pcp_high", "_fl", "_od", "_rc", "_ow",
    "_zn", "zones", "_data", "max_pfn", "pop", "_size_cache", "partial", "free", "fresh",
    "free_map", "inuse", "objects", "active_objs", "slab_bytes", "nr_allocs", "_zero", "pfn",
    "page_offset", "max_low_pfn", "_page_slab", "caches", "_totalram",
    "alloc_pages_bulk"};

static PyObject *vw_s[W_N];
#define WS(i) vw_s[i]

/* Vmalloc._c_whole: what the whole operations read and the layer never rebinds. */
enum { WC_SPACE, WC_PHYS, WC_PGT, WC_SLAB, WC_LOG, WC_SIZEOF_VM, WC_VSTART, WC_VEND, WC_CPUS,
       WC_UMAX, WC_PAGES_HIGHMEM, WC_REQUESTED, WC_PROT, WC_GFP_KERNEL, WC_GFP_ZERO,
       WC_GFP_HIGHMEM, WC_GFP_NOWARN, WC_RECLAIM_MASK, WC_PHYS_TYPE, WC_PGT_TYPE,
       WC_PG_PCP, WC_PG_ALLOC, WC_PG_PGTABLE, WC_OWNER_NONE, WC_WMARK_LOW, WC_SLAB_TYPE,
       WC_CACHE_CLS, WC_SLAB_CLS, WC_ORIGS, WC_N };
/* Vmalloc._c_whole[WC_ORIGS]: the lower layers' methods the compiled twins stand in for */
enum { O_KMALLOC, O_KFREE, O_ALLOC_PAGES, O_FREE_PAGES, O_MAP_PAGES, O_UNMAP, O_FIND_VMAP_AREA,
       O_FIND_UNLINK, O_FREE_NOFLUSH, O_ALLOC_VMAP_AREA, O_VM_AREA_ALLOC_PAGES, O_N };

typedef struct {
    PyObject *self, *consts, *d; /* d: self.__dict__ (new reference) */
    PyObject *space, *phys, *pgt, *slab, *log;
    uint64_t vstart, vend, umax, zero, highmem, nowarn, reclaim, gfp_kernel;
    long cpus;
    int pages_highmem, requested;
} wctx_t;

/* bulk pages section (helper bulkc, defined at the end of the file): the page
 * allocator's multi-page and refill/drain twins, the multi-page PTE fill and clear */
static PyObject *bk_vm_area_alloc_pages(wctx_t *c, uint64_t gfp, PyObject *nid, uint64_t nr);
static int bk_map_ptes(PyObject *pgt, uint64_t addr, PyObject *pages, uint64_t prot);
static int bk_unmap_cached(PyObject *pgt, uint64_t addr, uint64_t size);
static int bk_vfree_pages(PyObject *phys, PyObject *pages, uint64_t nr);
static PyObject *bk_alloc_page_obj(PyObject *phys, uint64_t gfp, int order, PyObject *nid);
static int bk_free_page_obj(PyObject *phys, PyObject *pfn_o, int order);
static PyObject *bk_kmalloc_new_slab(wctx_t *c, PyObject *size_o, uint64_t gfp, PyObject *node);
static int bk_kfree_last(wctx_t *c, PyObject *addr_o);

static PyObject *vw_init(PyObject *self, PyObject *args) {
    PyObject *vmstruct, *vmaparea, *np_array, *np_int64, *np_empty, *space_globals;
    if (!PyArg_ParseTuple(args, "O!O!OOOO!", &PyType_Type, &vmstruct, &PyType_Type, &vmaparea,
                          &np_array, &np_int64, &np_empty, &PyDict_Type, &space_globals))
        return NULL;
    Py_INCREF(space_globals);
    Py_XSETREF(vw_space_globals, space_globals);
    for (int i = 0; i < W_N; i++)
        if (!vw_s[i] && !(vw_s[i] = PyUnicode_InternFromString(vw_names[i]))) return NULL;
    if (!vw_kw_dtype && !(vw_kw_dtype = Py_BuildValue("(s)", "dtype"))) return NULL;
    if (!vw_kw_cpu && !(vw_kw_cpu = Py_BuildValue("(s)", "cpu"))) return NULL;
    if (!vw_kw_alloc && !(vw_kw_alloc = Py_BuildValue("(sss)", "cpu", "gfp_nowarn", "vm")))
        return NULL;
    if (!vw_vm_flags_alloc && !(vw_vm_flags_alloc = PyLong_FromLong(0x002 | 0x020)))
        return NULL;
    if (!vw_numa_no_node && !(vw_numa_no_node = PyLong_FromLong(-1))) return NULL;
    Py_INCREF(vmstruct);
    Py_XSETREF(vw_vmstruct_type, (PyTypeObject *)vmstruct);
    Py_INCREF(vmaparea);
    Py_XSETREF(vw_vmaparea_type, (PyTypeObject *)vmaparea);
    Py_INCREF(np_array);
    Py_XSETREF(vw_np_array, np_array);
    Py_INCREF(np_int64);
    Py_XSETREF(vw_np_int64, np_int64);
    Py_INCREF(np_empty);
    Py_XSETREF(vw_np_empty, np_empty);
    Py_RETURN_NONE;
}

/* A non-negative exact int that fits 64 bits: 1 (value in *out), 0 (not one), -1 error. */
static int vw_u64(PyObject *o, uint64_t *out) {
    if (!PyLong_CheckExact(o)) return 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();
        return 0;
    }
    *out = (uint64_t)v;
    return 1;
}

static int vw_attr_u64(PyObject *o, PyObject *name, uint64_t *out) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (!v) return -1;
    int r = vw_u64(v, out);
    Py_DECREF(v);
    return r;
}

static void wctx_release(wctx_t *c) { Py_CLEAR(c->d); }

/* 1: a Vmalloc whose profile the whole operations mirror (c filled), 0: not, -1: error. */
static int wctx_get(PyObject *self, wctx_t *c) {
    c->d = NULL;
    if (!vw_vmstruct_type) return 0;
    c->self = self;
    c->d = PyObject_GenericGetDict(self, NULL);
    if (!c->d) {
        PyErr_Clear();
        return 0;
    }
    PyObject *t = PyDict_GetItemWithError(c->d, WS(W_C_WHOLE));
    if (!t) {
        if (PyErr_Occurred()) return -1;
        return 0;
    }
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != WC_N) return 0;
    c->consts = t;
    c->space = PyTuple_GET_ITEM(t, WC_SPACE);
    c->phys = PyTuple_GET_ITEM(t, WC_PHYS);
    c->pgt = PyTuple_GET_ITEM(t, WC_PGT);
    c->slab = PyTuple_GET_ITEM(t, WC_SLAB);
    c->log = PyTuple_GET_ITEM(t, WC_LOG);
    uint64_t cpus, ph, rq;
    if (vw_u64(PyTuple_GET_ITEM(t, WC_VSTART), &c->vstart) != 1 ||
        vw_u64(PyTuple_GET_ITEM(t, WC_VEND), &c->vend) != 1 ||
        vw_u64(PyTuple_GET_ITEM(t, WC_UMAX), &c->umax) != 1 ||
        vw_u64(PyTuple_GET_ITEM(t, WC_CPUS), &cpus) != 1 ||
        vw_u64(PyTuple_GET_ITEM(t, WC_PAGES_HIGHMEM), &ph) != 1 ||
        vw_u64(PyTuple_GET_ITEM(t, WC_REQUESTED), &rq) != 1 ||
        vw_u64(PyTuple_GET_ITEM(t, WC_GFP_KERNEL), &c->gfp_kernel) != 1 ||
        vw_u64(PyTuple_GET_ITEM(t, WC_GFP_ZERO), &c->zero) != 1 ||
        vw_u64(PyTuple_GET_ITEM(t, WC_GFP_HIGHMEM), &c->highmem) != 1 ||
        vw_u64(PyTuple_GET_ITEM(t, WC_GFP_NOWARN), &c->nowarn) != 1 ||
        vw_u64(PyTuple_GET_ITEM(t, WC_RECLAIM_MASK), &c->reclaim) != 1)
        return PyErr_Occurred() ? -1 : 0;
    c->cpus = (long)cpus;
    c->pages_highmem = ph != 0;
    c->requested = rq != 0;
    return 1;
}

/* The checks every whole operation makes before it changes anything: cpu is an online
 * CPU (exact int), nothing explains, the log is not strict, not in interrupt context.
 * 1: go on; 0: decline; -1: error. */
static int vw_common_checks(wctx_t *c, PyObject *cpu_o) {
    if (!PyLong_CheckExact(cpu_o)) return 0;
    long cpu = PyLong_AsLong(cpu_o);
    if (cpu == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (cpu < 0 || cpu >= c->cpus) return 0;
    PyObject *v = PyObject_GetAttr(c->space, WS(W_EXPLAIN));
    if (!v) return -1;
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (t != 0) return t < 0 ? -1 : 0;
    v = PyObject_GetAttr(c->log, WS(W_STRICT));
    if (!v) return -1;
    t = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (t != 0) return t < 0 ? -1 : 0;
    PyObject *fn = PyDict_GetItemWithError(c->d, WS(W_IN_INTERRUPT));
    if (!fn) return PyErr_Occurred() ? -1 : 0;
    v = PyObject_CallNoArgs(fn);
    if (!v) return -1;
    t = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (t != 0) return t < 0 ? -1 : 0;
    return 1;
}

/* log.depth += delta */
static int vw_depth(wctx_t *c, long delta) {
    PyObject *v = PyObject_GetAttr(c->log, WS(W_DEPTH));
    if (!v) return -1;
    PyObject *d = PyLong_FromLong(delta);
    if (!d) {
        Py_DECREF(v);
        return -1;
    }
    PyObject *n = PyNumber_Add(v, d);
    Py_DECREF(v);
    Py_DECREF(d);
    if (!n) return -1;
    int r = PyObject_SetAttr(c->log, WS(W_DEPTH), n);
    Py_DECREF(n);
    return r;
}

/* Vmalloc._leave: after_call(), then (finally) log.depth -= 1, then the held strict
 * warning or hang is raised. 0 or -1 (exception set). */
static int vw_leave(wctx_t *c) {
    PyObject *fn = PyDict_GetItemWithError(c->d, WS(W_AFTER_CALL));
    PyObject *r = NULL;
    if (fn) {
        r = PyObject_CallNoArgs(fn);
    } else if (!PyErr_Occurred()) {
        r = PyObject_CallMethodNoArgs(c->self, WS(W_AFTER_CALL));
    }
    if (!r) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (vw_depth(c, -1) < 0) {
            Py_XDECREF(et);
            Py_XDECREF(ev);
            Py_XDECREF(tb);
            return -1;
        }
        PyErr_Restore(et, ev, tb);
        return -1;
    }
    Py_DECREF(r);
    if (vw_depth(c, -1) < 0) return -1;
    PyObject *p = PyObject_GetAttr(c->log, WS(W_PENDING));
    if (!p) return -1;
    int t = PyObject_IsTrue(p);
    Py_DECREF(p);
    if (t < 0) return -1;
    if (!t) {
        PyObject *h = PyObject_GetAttr(c->log, WS(W_HUNG));
        if (!h) return -1;
        t = h != Py_None;
        Py_DECREF(h);
    }
    if (t) {
        r = PyObject_CallMethodNoArgs(c->log, WS(W_RAISE_HELD));
        if (!r) return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* Run vw_leave in the body's `finally`: with the body's exception pending, a failing
 * leave replaces it (as a raise in a Python finally does); else it is restored. */
static int vw_leave_finally(wctx_t *c, int body_failed) {
    if (!body_failed) return vw_leave(c);
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (vw_leave(c) < 0) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return -1;
    }
    PyErr_Restore(et, ev, tb);
    return -1;
}

/* self.stats[key] += 1 */
static int vw_stat(wctx_t *c, PyObject *key) {
    PyObject *st = PyDict_GetItemWithError(c->d, WS(W_STATS));
    if (!st) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "stats");
        return -1;
    }
    PyObject *v = PyObject_GetItem(st, key);
    if (!v) return -1;
    PyObject *n = PyNumber_Add(v, small_one);
    Py_DECREF(v);
    if (!n) return -1;
    int r = PyObject_SetItem(st, key, n);
    Py_DECREF(n);
    return r;
}

/* obj.name += delta (an int attribute) */
static int vw_add_attr(PyObject *obj, PyObject *name, PyObject *delta, int sub) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (!v) return -1;
    PyObject *n = sub ? PyNumber_Subtract(v, delta) : PyNumber_Add(v, delta);
    Py_DECREF(v);
    if (!n) return -1;
    int r = PyObject_SetAttr(obj, name, n);
    Py_DECREF(n);
    return r;
}

static inline PyObject *vw_meth(PyObject *name, PyObject *const *args, size_t n,
                                PyObject *kwnames) {
    return PyObject_VectorcallMethod(name, (PyObject **)args,
                                     n | PY_VECTORCALL_ARGUMENTS_OFFSET, kwnames);
}

/* self._warn_alloc(gfp, text) */
static int vw_warn_alloc(wctx_t *c, uint64_t gfp, PyObject *text) {
    if (!text) return -1;
    PyObject *g = PyLong_FromUnsignedLongLong(gfp);
    if (!g) {
        Py_DECREF(text);
        return -1;
    }
    PyObject *a[3] = {c->self, g, text};
    PyObject *r = vw_meth(WS(W_WARN_ALLOC), a, 3, NULL);
    Py_DECREF(g);
    Py_DECREF(text);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

/* self.<name>(area, cpu=cpu) */
static int vw_call_area_cpu(wctx_t *c, PyObject *name, PyObject *area, PyObject *cpu) {
    PyObject *a[3] = {c->self, area, cpu};
    PyObject *r = vw_meth(name, a, 2, vw_kw_cpu);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

static int vw_setattr_u64(PyObject *o, PyObject *name, uint64_t v) {
    PyObject *x = PyLong_FromUnsignedLongLong(v);
    if (!x) return -1;
    int r = PyObject_SetAttr(o, name, x);
    Py_DECREF(x);
    return r;
}


static int vm_buf(PyObject *o, Py_buffer *b, Py_ssize_t itemsize); /* speedvm section */

/* Is the compiled twin `name` of vmap/space.py switched on (its module global is not
 * None, as the Python method tests before calling it)? */
static int vw_space_twin_on(PyObject *name) {
    if (!vw_space_globals) return 0;
    PyObject *f = PyDict_GetItemWithError(vw_space_globals, name);
    return f != NULL && f != Py_None;
}

/* The busy area containing addr, looked up in the address's node only (the first node
 * VmapSpace.find_vmap_area searches): a new reference, or Py_None (new reference) when
 * this lookup does not decide it and the Python method must run, NULL on error. */
static PyObject *vw_find_first_node(PyObject *space, uint64_t addr) {
    ctx_t c;
    int rc = ctx_get_ex(space, &c, 0);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    uint64_t s, e;
    Py_ssize_t bi = c.n > 1 ? (Py_ssize_t)((addr / c.zone) % (uint64_t)c.n) : 0;
    PyObject *node = get_node(PyTuple_GET_ITEM(c.busy, bi), off_root);
    while (node != NULL) {
        if (Py_TYPE(node) != va_type || !va_bounds(node, &s, &e)) {
            node = NULL;
            break;
        }
        if (addr < s)
            node = get_node(node, off_left);
        else if (addr >= e)
            node = get_node(node, off_right);
        else
            break;
    }
    ctx_release(&c);
    if (PyErr_Occurred()) return NULL;
    if (node == NULL) Py_RETURN_NONE;
    Py_INCREF(node);
    return node;
}

/* A page-table attribute as u64: 1, 0 (not one), -1. */
#define VW_PGT_ATTR(name, out) vw_attr_u64(pgt, WS(name), out)

/* PageTables.map_pages(addr, [pfn], prot, PAGE_SHIFT) when _map_one_pte finds the PTE
 * table cached and the slot empty: the entry written, 1. 0: decline (nothing changed,
 * the Python method runs: a table to allocate, a busy slot's WARN, a huge leaf). */
static int vw_map_one_pte(PyObject *pgt, uint64_t addr, uint64_t pfn, uint64_t prot) {
    uint64_t shift, ents, mask;
    int r;
    if (addr & 4095 || pfn >> 40) return 0;
    if ((r = VW_PGT_ATTR(W_PMD_SHIFT, &shift)) != 1 || (r = VW_PGT_ATTR(W_PTE_ENTRIES, &ents)) != 1 ||
        (r = VW_PGT_ATTR(W_SUPPORTED_PTE_MASK, &mask)) != 1)
        return r;
    if (shift >= 64 || ents == 0 || (ents & (ents - 1))) return 0;
    PyObject *cache = PyObject_GetAttr(pgt, WS(W_PTECACHE));
    if (!cache) return -1;
    if (!PyDict_CheckExact(cache)) {
        Py_DECREF(cache);
        return 0;
    }
    PyObject *key = PyLong_FromUnsignedLongLong(addr >> shift);
    if (!key) {
        Py_DECREF(cache);
        return -1;
    }
    PyObject *tbl = PyDict_GetItemWithError(cache, key);
    Py_DECREF(key);
    Py_XINCREF(tbl);
    Py_DECREF(cache);
    if (!tbl) return PyErr_Occurred() ? -1 : 0;
    Py_buffer b;
    if (vm_buf(tbl, &b, 8) < 0) {
        Py_DECREF(tbl);
        PyErr_Clear();
        return 0;
    }
    uint64_t idx = (addr >> 12) & (ents - 1);
    int done = 0;
    if ((Py_ssize_t)idx < b.shape[0]) {
        uint64_t *e = (uint64_t *)b.buf + idx;
        if (*e == 0) {
            *e = (pfn << 12) | (prot & mask);
            done = 1;
        }
    }
    PyBuffer_Release(&b);
    Py_DECREF(tbl);
    return done;
}

/* PageTables.unmap(addr, size)'s first case: the range under one PMD whose PTE table is
 * cached; its slots cleared, 1. 0: decline (the Python method runs). */
static int vw_unmap_one_pmd(PyObject *pgt, uint64_t addr, uint64_t size) {
    uint64_t shift, ents;
    int r;
    if (size == 0 || addr + size < addr) return 0;
    if ((r = VW_PGT_ATTR(W_PMD_SHIFT, &shift)) != 1 || (r = VW_PGT_ATTR(W_PTE_ENTRIES, &ents)) != 1)
        return r;
    if (shift >= 64 || ents == 0 || (ents & (ents - 1))) return 0;
    if (addr >> shift != (addr + size - 1) >> shift) return 0;
    PyObject *cache = PyObject_GetAttr(pgt, WS(W_PTECACHE));
    if (!cache) return -1;
    if (!PyDict_CheckExact(cache)) {
        Py_DECREF(cache);
        return 0;
    }
    PyObject *key = PyLong_FromUnsignedLongLong(addr >> shift);
    if (!key) {
        Py_DECREF(cache);
        return -1;
    }
    PyObject *tbl = PyDict_GetItemWithError(cache, key);
    Py_DECREF(key);
    Py_XINCREF(tbl);
    Py_DECREF(cache);
    if (!tbl) return PyErr_Occurred() ? -1 : 0;
    Py_buffer b;
    if (vm_buf(tbl, &b, 8) < 0) {
        Py_DECREF(tbl);
        PyErr_Clear();
        return 0;
    }
    Py_ssize_t i0 = (Py_ssize_t)((addr >> 12) & (ents - 1));
    Py_ssize_t i1 = i0 + (Py_ssize_t)((size + 4095) >> 12);
    if (i1 > b.shape[0]) i1 = b.shape[0]; /* (a numpy slice stops at the end) */
    if (i0 < i1) memset((uint64_t *)b.buf + i0, 0, (size_t)(i1 - i0) * 8);
    PyBuffer_Release(&b);
    Py_DECREF(tbl);
    return 1;
}


/* Is the method `name` of obj replaced — on the instance (a test's fault injection, a
 * recorder) or on its class (monkeypatched)? Then its compiled twin must not stand in
 * for it. 1: replaced (or unknown), 0: the original (Vmalloc._c_whole[WC_ORIGS][o]). */
static int vw_shadowed_o(wctx_t *c, PyObject *obj, PyObject *name, int o) {
    PyObject *origs = PyTuple_GET_ITEM(c->consts, WC_ORIGS);
    if (!PyTuple_CheckExact(origs) || PyTuple_GET_SIZE(origs) != O_N) return 1;
    if (_PyType_Lookup(Py_TYPE(obj), name) != PyTuple_GET_ITEM(origs, o)) return 1;
    PyObject **dp = _PyObject_GetDictPtr(obj);
    if (dp == NULL || *dp == NULL) return 0;
    PyObject *v = PyDict_GetItemWithError(*dp, name);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    return v != NULL;
}

/* A page column, through the memoryview PhysicalMemory keeps of it (_fl, _od, _rc, _ow,
 * _zn: 1- or 4-byte ints); the view's own buffer, no new export. */
typedef struct {
    PyObject *mv;
    Py_buffer *b;
} col_t;

static int col_get(PyObject *phys, PyObject *name, col_t *c) {
    c->mv = PyObject_GetAttr(phys, name);
    if (!c->mv) return -1;
    if (!PyMemoryView_Check(c->mv)) goto no;
    c->b = PyMemoryView_GET_BUFFER(c->mv);
    if (c->b->readonly || c->b->ndim != 1 || !(c->b->itemsize == 1 || c->b->itemsize == 4) ||
        c->b->buf == NULL || (c->b->strides && c->b->strides[0] != c->b->itemsize))
        goto no;
    return 1;
no:
    Py_CLEAR(c->mv);
    return 0;
}
static void col_release(col_t *c) { Py_CLEAR(c->mv); }
#define COL_LEN(c) ((c).b->shape[0])
static inline int64_t col_rd(col_t *c, Py_ssize_t i) {
    const char *f = c->b->format;
    int u = f && (f[0] == 'B' || f[0] == 'I' || f[0] == 'L');
    if (c->b->itemsize == 1)
        return u ? (int64_t)((uint8_t *)c->b->buf)[i] : (int64_t)((int8_t *)c->b->buf)[i];
    return u ? (int64_t)((uint32_t *)c->b->buf)[i] : (int64_t)((int32_t *)c->b->buf)[i];
}
static inline void col_wr(col_t *c, Py_ssize_t i, int64_t v) {
    if (c->b->itemsize == 1)
        ((uint8_t *)c->b->buf)[i] = (uint8_t)v;
    else
        ((uint32_t *)c->b->buf)[i] = (uint32_t)v;
}

static long vw_const(wctx_t *c, int i) { return PyLong_AsLong(PyTuple_GET_ITEM(c->consts, i)); }

/* PhysicalMemory.alloc_pages(gfp, 0, nid)'s first-zone fast path when the zone's pcp
 * list has a page (then _prep_new_page): the pfn (new int). Py_None (new reference):
 * decline, nothing changed, the method runs. NULL: error. */
static PyObject *vw_alloc_page0(wctx_t *c, uint64_t gfp, PyObject *nid) {
    PyObject *phys = c->phys, *res = NULL, *zh = NULL, *z = NULL, *key = NULL, *pcp = NULL;
    PyObject *pfn_o = NULL;
    col_t fl = {0}, od = {0}, rc = {0}, ow = {0};
    if ((PyObject *)Py_TYPE(phys) != PyTuple_GET_ITEM(c->consts, WC_PHYS_TYPE) ||
        vw_shadowed_o(c, phys, WS(W_ALLOC_PAGES), O_ALLOC_PAGES))
        goto decline;
    /* the bulk pages section's twin (a pcp refill included) when it mirrors phys */
    if ((res = bk_alloc_page_obj(phys, gfp, 0, nid)) != Py_None) return res;
    Py_CLEAR(res);
    {
        PyObject *g = PyLong_FromUnsignedLongLong(gfp);
        if (!g) goto error;
        key = PyTuple_Pack(2, nid, g);
        Py_DECREF(g);
        if (!key) goto error;
        PyObject *zl = PyObject_GetAttr(phys, WS(W_ZL_GFP));
        if (!zl) goto error;
        if (PyDict_CheckExact(zl)) {
            zh = PyDict_GetItemWithError(zl, key);
            Py_XINCREF(zh);
        }
        Py_DECREF(zl);
        if (!zh) goto maybe_error;
    }
    if (!PyTuple_CheckExact(zh) || PyTuple_GET_SIZE(zh) != 2) goto decline;
    PyObject *zones = PyTuple_GET_ITEM(zh, 0), *highest = PyTuple_GET_ITEM(zh, 1);
    if (!PyList_CheckExact(zones) || PyList_GET_SIZE(zones) == 0) goto decline;
    z = PyList_GET_ITEM(zones, 0);
    Py_INCREF(z);
    {
        /* z.free_pages > z.wmark[WMARK_LOW] + z.lowmem_reserve[highest] */
        PyObject *fp = PyObject_GetAttr(z, WS(W_FREE_PAGES_ATTR));
        PyObject *wm = fp ? PyObject_GetAttr(z, WS(W_WMARK)) : NULL;
        PyObject *lr = wm ? PyObject_GetAttr(z, WS(W_LOWMEM_RESERVE)) : NULL;
        PyObject *w = lr ? PyObject_GetItem(wm, PyTuple_GET_ITEM(c->consts, WC_WMARK_LOW)) : NULL;
        PyObject *l = w ? PyObject_GetItem(lr, highest) : NULL;
        PyObject *sum = l ? PyNumber_Add(w, l) : NULL;
        int gt = sum ? PyObject_RichCompareBool(fp, sum, Py_GT) : -1;
        Py_XDECREF(fp);
        Py_XDECREF(wm);
        Py_XDECREF(lr);
        Py_XDECREF(w);
        Py_XDECREF(l);
        Py_XDECREF(sum);
        if (gt < 0) goto error;
        if (!gt) goto decline;
    }
    pcp = PyObject_GetAttr(z, WS(W_PCP));
    if (!pcp) goto error;
    if (!deque_type || Py_TYPE(pcp) != deque_type || PyObject_Length(pcp) <= 0) goto maybe_error;
    int r;
    if ((r = col_get(phys, WS(W_PFLAGS), &fl)) != 1 || (r = col_get(phys, WS(W_PORDER), &od)) != 1 ||
        (r = col_get(phys, WS(W_PREFCOUNT), &rc)) != 1 || (r = col_get(phys, WS(W_POWNER), &ow)) != 1) {
        if (r < 0) goto error;
        goto decline;
    }
    {
        /* peek pcp[0] first: a pfn outside the columns declines before the pop */
        PyObject *head = PySequence_GetItem(pcp, 0);
        if (!head) goto error;
        Py_ssize_t p = PyLong_Check(head) ? PyLong_AsSsize_t(head) : -1;
        Py_DECREF(head);
        if (p == -1 && PyErr_Occurred()) goto error;
        if (p < 0 || p >= COL_LEN(fl) || p >= COL_LEN(od) || p >= COL_LEN(rc) ||
            p >= COL_LEN(ow))
            goto decline;
        pfn_o = call1(dq_popleft, pcp);
        if (!pfn_o) goto error;
        long pcpf = vw_const(c, WC_PG_PCP), alloc = vw_const(c, WC_PG_ALLOC),
             none = vw_const(c, WC_OWNER_NONE);
        /* self._fl[pfn] &= ~PG_PCP, then _prep_new_page(pfn, 0, gfp) */
        col_wr(&fl, p, (col_rd(&fl, p) & ~pcpf) | alloc);
        col_wr(&od, p, 0);
        col_wr(&rc, p, 1);
        col_wr(&ow, p, none);
        if (gfp & c->zero) {
            PyObject *data = PyObject_GetAttr(phys, WS(W_DATA));
            if (!data) goto error;
            int t = PyObject_IsTrue(data);
            if (t > 0 && PyDict_CheckExact(data)) {
                if (PyDict_DelItem(data, pfn_o) < 0) {
                    if (PyErr_ExceptionMatches(PyExc_KeyError))
                        PyErr_Clear();
                    else
                        t = -1;
                }
            } else if (t > 0) {
                PyObject *a[3] = {data, pfn_o, Py_None};
                PyObject *x = PyObject_VectorcallMethod(WS(W_POP_NAME), a, 3, NULL);
                if (!x) t = -1;
                Py_XDECREF(x);
            }
            Py_DECREF(data);
            if (t < 0) goto error;
        }
    }
    res = pfn_o;
    pfn_o = NULL;
    goto out;
maybe_error:
    if (PyErr_Occurred()) goto error;
decline:
    res = Py_NewRef(Py_None);
    goto out;
error:
    res = NULL;
out:
    col_release(&fl);
    col_release(&od);
    col_release(&rc);
    col_release(&ow);
    Py_XDECREF(zh);
    Py_XDECREF(z);
    Py_XDECREF(key);
    Py_XDECREF(pcp);
    Py_XDECREF(pfn_o);
    return res;
}

/* PhysicalMemory.free_pages(pfn, 0) for an allocated order-0 page with one reference,
 * not a page-table page, whose zone's pcp list stays below pcp_high (no drain): 1 done.
 * 0: decline (nothing changed, the method runs). -1: error. */
static int vw_free_page0(wctx_t *c, PyObject *pfn_o) {
    PyObject *phys = c->phys, *zones = NULL, *z = NULL, *pcp = NULL;
    col_t fl = {0}, od = {0}, rc = {0}, ow = {0}, zn = {0};
    int res = 0, r;
    if ((PyObject *)Py_TYPE(phys) != PyTuple_GET_ITEM(c->consts, WC_PHYS_TYPE) ||
        vw_shadowed_o(c, phys, WS(W_FREE_PAGES), O_FREE_PAGES) || !PyLong_CheckExact(pfn_o))
        return 0;
    /* the bulk pages section's twin (a pcp drain included) when it mirrors phys */
    if ((res = bk_free_page_obj(phys, pfn_o, 0)) != 0) return res;
    Py_ssize_t p = PyLong_AsSsize_t(pfn_o);
    if (p == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if ((r = col_get(phys, WS(W_PFLAGS), &fl)) != 1 || (r = col_get(phys, WS(W_PORDER), &od)) != 1 ||
        (r = col_get(phys, WS(W_PREFCOUNT), &rc)) != 1 || (r = col_get(phys, WS(W_POWNER), &ow)) != 1 ||
        (r = col_get(phys, WS(W_PZONE), &zn)) != 1) {
        res = r < 0 ? -1 : 0;
        goto out;
    }
    uint64_t max_pfn;
    if ((r = vw_attr_u64(phys, WS(W_MAX_PFN), &max_pfn)) != 1) {
        res = r < 0 ? -1 : 0;
        goto out;
    }
    if (p < 0 || (uint64_t)p >= max_pfn || p >= COL_LEN(fl) || p >= COL_LEN(od) ||
        p >= COL_LEN(rc) || p >= COL_LEN(ow) || p >= COL_LEN(zn))
        goto out;
    long pcpf = vw_const(c, WC_PG_PCP), alloc = vw_const(c, WC_PG_ALLOC),
         pgtable = vw_const(c, WC_PG_PGTABLE), none = vw_const(c, WC_OWNER_NONE);
    int64_t f = col_rd(&fl, p);
    if (!(f & alloc) || (f & pgtable) || col_rd(&od, p) != 0 || col_rd(&rc, p) != 1) goto out;
    zones = PyObject_GetAttr(phys, WS(W_ZONES));
    if (!zones) goto error;
    if (!PyList_CheckExact(zones)) goto out;
    int64_t zi = col_rd(&zn, p);
    if (zi < 0 || zi >= PyList_GET_SIZE(zones)) goto out;
    z = Py_NewRef(PyList_GET_ITEM(zones, zi));
    pcp = PyObject_GetAttr(z, WS(W_PCP));
    if (!pcp) goto error;
    if (!deque_type || Py_TYPE(pcp) != deque_type) goto out;
    uint64_t high;
    if ((r = vw_attr_u64(z, WS(W_PCP_HIGH), &high)) != 1) {
        res = r < 0 ? -1 : 0;
        goto out;
    }
    Py_ssize_t n = PyObject_Length(pcp);
    if (n < 0) goto error;
    if ((uint64_t)n + 1 >= high) goto out; /* free_pcppages_bulk: the method */
    PyObject *x = call2(dq_appendleft, pcp, pfn_o);
    if (!x) goto error;
    Py_DECREF(x);
    col_wr(&rc, p, 0);
    col_wr(&od, p, 0);
    col_wr(&ow, p, none);
    col_wr(&fl, p, (f & ~alloc) | pcpf);
    res = 1;
    goto out;
error:
    res = -1;
out:
    col_release(&fl);
    col_release(&od);
    col_release(&rc);
    col_release(&ow);
    col_release(&zn);
    Py_XDECREF(zones);
    Py_XDECREF(z);
    Py_XDECREF(pcp);
    return res;
}


/* An exact int attribute that fits a long long: 1, 0 (not one), -1. */
static int vw_attr_ll(PyObject *o, PyObject *name, long long *out) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (!v) return -1;
    int r = 0;
    if (PyLong_CheckExact(v)) {
        int of;
        *out = PyLong_AsLongLongAndOverflow(v, &of);
        r = (*out == -1 && PyErr_Occurred()) ? -1 : !of;
    }
    Py_DECREF(v);
    return r;
}
/* The instance dict of a plain object (SlabAllocator, KmemCache, Slab: dataclasses
 * without properties or slots), borrowed; NULL when it has none. */
static inline PyObject *vw_idict(PyObject *o) {
    PyObject **dp = _PyObject_GetDictPtr(o);
    return dp ? *dp : NULL;
}
/* d[name] as a long long: 1, 0 (missing or not an exact int that fits), -1. */
static int vw_dll(PyObject *d, PyObject *name, long long *out) {
    PyObject *v = PyDict_GetItemWithError(d, name);
    if (!v) return PyErr_Occurred() ? -1 : 0;
    if (!PyLong_CheckExact(v)) return 0;
    int of;
    *out = PyLong_AsLongLongAndOverflow(v, &of);
    if (*out == -1 && PyErr_Occurred()) return -1;
    return !of;
}
static int vw_dset(PyObject *d, PyObject *name, long long v) {
    PyObject *x = PyLong_FromLongLong(v);
    if (!x) return -1;
    int r = PyDict_SetItem(d, name, x);
    Py_DECREF(x);
    return r;
}
static int vw_du64(PyObject *d, PyObject *name, uint64_t *out) {
    PyObject *v = PyDict_GetItemWithError(d, name);
    if (!v) return PyErr_Occurred() ? -1 : 0;
    return vw_u64(v, out);
}

/* SlabAllocator.kmalloc(size, gfp, node) for a size with its cache memoised and a
 * partial slab (no new slab): the object's address (new int); Py_None (new reference):
 * decline, nothing changed, the method runs; NULL: error. The fields are read and
 * written in the objects' instance dicts (the classes are checked exactly). */
static PyObject *vw_kmalloc(wctx_t *c, PyObject *size_o, uint64_t gfp) {
    PyObject *sa = c->slab, *res = NULL;
    PyObject *sa_d, *sc, *cache, *cache_d, *partial, *slab, *slab_d, *free, *fmap;
    if ((PyObject *)Py_TYPE(sa) != PyTuple_GET_ITEM(c->consts, WC_SLAB_TYPE) ||
        !(sa_d = vw_idict(sa)) || vw_shadowed_o(c, sa, WS(W_KMALLOC), O_KMALLOC))
        goto maybe_error; /* (a kmalloc replaced: the method) */
    if (PyErr_Occurred()) goto error;
    sc = PyDict_GetItemWithError(sa_d, WS(W_SIZE_CACHE));
    if (!sc || !PyDict_CheckExact(sc)) goto maybe_error;
    cache = PyDict_GetItemWithError(sc, size_o);
    if (!cache || (PyObject *)Py_TYPE(cache) != PyTuple_GET_ITEM(c->consts, WC_CACHE_CLS) ||
        !(cache_d = vw_idict(cache)))
        goto maybe_error;
    partial = PyDict_GetItemWithError(cache_d, WS(W_PARTIAL));
    if (!partial || !PyList_CheckExact(partial) || PyList_GET_SIZE(partial) == 0)
        goto maybe_error;
    slab = PyList_GET_ITEM(partial, PyList_GET_SIZE(partial) - 1);
    if ((PyObject *)Py_TYPE(slab) != PyTuple_GET_ITEM(c->consts, WC_SLAB_CLS) ||
        !(slab_d = vw_idict(slab)))
        goto maybe_error;
    free = PyDict_GetItemWithError(slab_d, WS(W_SFREE));
    fmap = free ? PyDict_GetItemWithError(slab_d, WS(W_FREE_MAP)) : NULL;
    if (!fmap || !PyList_CheckExact(free) || !PyByteArray_CheckExact(fmap)) goto maybe_error;
    long long idx, fresh = 0, inuse, objects, csize, a_o, s_b, n_a;
    uint64_t saddr;
    int r, from_free = PyList_GET_SIZE(free) > 0;
    if (from_free) {
        PyObject *last = PyList_GET_ITEM(free, PyList_GET_SIZE(free) - 1);
        if (!PyLong_CheckExact(last)) goto decline;
        idx = PyLong_AsLongLong(last);
        if (idx == -1 && PyErr_Occurred()) goto error;
    } else {
        if ((r = vw_dll(slab_d, WS(W_FRESH), &fresh)) != 1) goto r_decline;
        idx = fresh;
    }
    if ((r = vw_dll(slab_d, WS(W_INUSE), &inuse)) != 1 ||
        (r = vw_dll(slab_d, WS(W_OBJECTS), &objects)) != 1 ||
        (r = vw_dll(cache_d, WS(W_SIZE), &csize)) != 1 ||
        (r = vw_du64(slab_d, WS(W_ADDR), &saddr)) != 1 ||
        (r = vw_dll(cache_d, WS(W_ACTIVE_OBJS), &a_o)) != 1 ||
        (r = vw_dll(sa_d, WS(W_SLAB_BYTES), &s_b)) != 1 ||
        (r = vw_dll(sa_d, WS(W_NR_ALLOCS), &n_a)) != 1)
        goto r_decline;
    if (idx < 0 || idx >= PyByteArray_GET_SIZE(fmap) || csize <= 0 || idx > LLONG_MAX / csize ||
        saddr + (uint64_t)(idx * csize) < saddr || s_b > LLONG_MAX - csize)
        goto decline;
    Py_INCREF(slab);
    Py_INCREF(partial);
    Py_INCREF(free);
    /* state changes from here, in the reference's order */
    int e = 0;
    if (from_free)
        e = PyList_SetSlice(free, PyList_GET_SIZE(free) - 1, PyList_GET_SIZE(free), NULL);
    else
        e = vw_dset(slab_d, WS(W_FRESH), idx + 1);
    if (e == 0) {
        PyByteArray_AS_STRING(fmap)[idx] = 0;
        e = vw_dset(slab_d, WS(W_INUSE), inuse + 1);
    }
    if (e == 0 && inuse + 1 == objects)
        e = PyList_SetSlice(partial, PyList_GET_SIZE(partial) - 1, PyList_GET_SIZE(partial), NULL);
    if (e == 0) e = vw_dset(cache_d, WS(W_ACTIVE_OBJS), a_o + 1);
    if (e == 0) e = vw_dset(sa_d, WS(W_SLAB_BYTES), s_b + csize);
    if (e == 0) e = vw_dset(sa_d, WS(W_NR_ALLOCS), n_a + 1);
    long long off = idx * csize;
    if (e == 0 && gfp & c->zero) {
        /* if gfp & __GFP_ZERO and self.phys._data: self._zero(slab.pfn, off, csize) */
        PyObject *data = PyObject_GetAttr(c->phys, WS(W_DATA));
        int t = data ? PyObject_IsTrue(data) : -1;
        Py_XDECREF(data);
        if (t < 0) e = -1;
        if (t > 0) {
            PyObject *pfn = PyDict_GetItemWithError(slab_d, WS(W_PFN));
            PyObject *o = pfn ? PyLong_FromLongLong(off) : NULL;
            PyObject *n = o ? PyLong_FromLongLong(csize) : NULL;
            PyObject *x = NULL;
            if (n) {
                PyObject *a[4] = {sa, pfn, o, n};
                x = vw_meth(WS(W_ZERO_M), a, 4, NULL);
            }
            Py_XDECREF(o);
            Py_XDECREF(n);
            if (!x) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "pfn");
                e = -1;
            }
            Py_XDECREF(x);
        }
    }
    Py_DECREF(slab);
    Py_DECREF(partial);
    Py_DECREF(free);
    if (e < 0) goto error;
    return PyLong_FromUnsignedLongLong(saddr + (uint64_t)off);
r_decline:
    if (r < 0) goto error;
    goto decline;
maybe_error:
    if (PyErr_Occurred()) goto error;
decline:
    res = Py_NewRef(Py_None);
    return res;
error:
    return NULL;
}

/* SlabAllocator.kfree(addr) for a live object of a slab that does not become empty:
 * 1 (freed; the method would return True). 0: decline (nothing changed, the method
 * runs: ZERO_SIZE_PTR, a large kmalloc, a bogus address, the slab's last object). */
static int vw_kfree(wctx_t *c, PyObject *addr_o) {
    PyObject *sa = c->slab, *sa_d, *ps, *slab, *slab_d, *free, *fmap, *caches, *cache, *cache_d,
             *partial, *key = NULL;
    int r;
    uint64_t addr, po, mlp;
    if ((PyObject *)Py_TYPE(sa) != PyTuple_GET_ITEM(c->consts, WC_SLAB_TYPE) ||
        !(sa_d = vw_idict(sa)) || vw_shadowed_o(c, sa, WS(W_KFREE), O_KFREE))
        return PyErr_Occurred() ? -1 : 0;
    if ((r = vw_u64(addr_o, &addr)) != 1) return r;
    if (addr <= 16) return 0;
    if ((r = vw_attr_u64(c->phys, WS(W_PAGE_OFFSET), &po)) != 1 ||
        (r = vw_attr_u64(c->phys, WS(W_MAX_LOW_PFN), &mlp)) != 1)
        return r;
    if (addr < po || mlp >= ((uint64_t)1 << 52) || addr - po >= (mlp << 12)) return 0;
    ps = PyDict_GetItemWithError(sa_d, WS(W_PAGE_SLAB));
    if (!ps || !PyDict_CheckExact(ps)) return PyErr_Occurred() ? -1 : 0;
    key = PyLong_FromUnsignedLongLong((addr - po) >> 12);
    if (!key) return -1;
    slab = PyDict_GetItemWithError(ps, key);
    Py_DECREF(key);
    if (!slab || (PyObject *)Py_TYPE(slab) != PyTuple_GET_ITEM(c->consts, WC_SLAB_CLS) ||
        !(slab_d = vw_idict(slab)))
        return PyErr_Occurred() ? -1 : 0;
    long long ssize, objects, inuse, a_o, s_b;
    uint64_t saddr;
    if ((r = vw_dll(slab_d, WS(W_SIZE), &ssize)) != 1 ||
        (r = vw_du64(slab_d, WS(W_ADDR), &saddr)) != 1 ||
        (r = vw_dll(slab_d, WS(W_OBJECTS), &objects)) != 1 ||
        (r = vw_dll(slab_d, WS(W_INUSE), &inuse)) != 1)
        return r;
    if (ssize <= 0 || addr < saddr || addr - saddr > (uint64_t)LLONG_MAX) return 0;
    long long d = (long long)(addr - saddr), idx = d / ssize;
    if (d % ssize || idx >= objects || inuse - 1 == 0) return 0; /* (the last: the method) */
    free = PyDict_GetItemWithError(slab_d, WS(W_SFREE));
    fmap = free ? PyDict_GetItemWithError(slab_d, WS(W_FREE_MAP)) : NULL;
    if (!fmap || !PyList_CheckExact(free) || !PyByteArray_CheckExact(fmap) ||
        idx >= PyByteArray_GET_SIZE(fmap) || PyByteArray_AS_STRING(fmap)[idx])
        return PyErr_Occurred() ? -1 : 0;
    caches = PyDict_GetItemWithError(sa_d, WS(W_CACHES));
    if (!caches || !PyDict_CheckExact(caches)) return PyErr_Occurred() ? -1 : 0;
    PyObject *sz = PyDict_GetItemWithError(slab_d, WS(W_SIZE)); /* the same int: the key */
    cache = sz ? PyDict_GetItemWithError(caches, sz) : NULL;
    if (!cache || (PyObject *)Py_TYPE(cache) != PyTuple_GET_ITEM(c->consts, WC_CACHE_CLS) ||
        !(cache_d = vw_idict(cache)))
        return PyErr_Occurred() ? -1 : 0;
    partial = PyDict_GetItemWithError(cache_d, WS(W_PARTIAL));
    if (!partial || !PyList_CheckExact(partial)) return PyErr_Occurred() ? -1 : 0;
    if ((r = vw_dll(cache_d, WS(W_ACTIVE_OBJS), &a_o)) != 1 ||
        (r = vw_dll(sa_d, WS(W_SLAB_BYTES), &s_b)) != 1)
        return r;
    PyObject *i = PyLong_FromLongLong(idx);
    if (!i) return -1;
    Py_INCREF(slab);
    Py_INCREF(free);
    /* state changes from here, in the reference's order */
    int e = 0;
    if (inuse == objects) e = PyList_Append(partial, slab);
    if (e == 0) e = PyList_Append(free, i);
    Py_DECREF(i);
    if (e == 0) {
        PyByteArray_AS_STRING(fmap)[idx] = 1;
        e = vw_dset(slab_d, WS(W_INUSE), inuse - 1);
    }
    if (e == 0) e = vw_dset(cache_d, WS(W_ACTIVE_OBJS), a_o - 1);
    if (e == 0) e = vw_dset(sa_d, WS(W_SLAB_BYTES), s_b - ssize);
    Py_DECREF(slab);
    Py_DECREF(free);
    return e < 0 ? -1 : 1;
}

/* test-vmalloc paths (helper tvspeed): a new order-0 slab / the last object of one */
static PyObject *tv_kmalloc_new_slab(wctx_t *c, PyObject *size_o, uint64_t gfp, PyObject *node);

/* slab.kmalloc(size, gfp, node): the compiled usual case, else the method */
static PyObject *vw_kmalloc_call(wctx_t *c, PyObject *size_o, uint64_t gfp, PyObject *node) {
    PyObject *r = vw_kmalloc(c, size_o, gfp);
    if (r != Py_None) return r;
    Py_DECREF(r);
    r = tv_kmalloc_new_slab(c, size_o, gfp, node);
    if (r != Py_None) return r;
    Py_DECREF(r);
    r = bk_kmalloc_new_slab(c, size_o, gfp, node);
    if (r != Py_None) return r;
    Py_DECREF(r);
    PyObject *g = PyLong_FromUnsignedLongLong(gfp);
    if (!g) return NULL;
    PyObject *a[4] = {c->slab, size_o, g, node};
    r = vw_meth(WS(W_KMALLOC), a, 4, NULL);
    Py_DECREF(g);
    return r;
}

/* slab.kfree(addr): the compiled usual case (True), else the method's result */
static PyObject *vw_kfree_call(wctx_t *c, PyObject *addr) {
    int done = vw_kfree(c, addr);
    if (done == 0) done = bk_kfree_last(c, addr);
    if (done < 0) return NULL;
    if (done) Py_RETURN_TRUE;
    PyObject *a[2] = {c->slab, addr};
    return vw_meth(WS(W_KFREE), a, 2, NULL);
}

/* The body of __vmalloc_node_range (Vmalloc._vmalloc_node_range's 6.x branch with
 * _get_vm_area_node, setup_vmalloc_vm, _vmalloc_area_node and vm_area_alloc_pages's
 * one-page case inlined, as the reference's unobserved path does) once the checks have
 * passed: the address (a new int), 0 (as an int) on failure, NULL on error. */
static PyObject *vw_vmalloc_body(wctx_t *c, uint64_t real_size, uint64_t size,
                                 uint64_t gfp, PyObject *size_o, PyObject *node,
                                 PyObject *caller, PyObject *cpu) {
    PyObject *kaddr = NULL, *area = NULL, *va = NULL, *pages_addr = NULL, *pages = NULL,
             *result = NULL, *tmp = NULL, *t2 = NULL;
    uint64_t nr_small = size >> 12, pfn1 = UINT64_MAX, prot;
    if (vw_u64(PyTuple_GET_ITEM(c->consts, WC_PROT), &prot) != 1) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "PAGE_KERNEL is not a u64");
        return NULL;
    }
    /* __get_vm_area_node: kzalloc_node(sizeof(struct vm_struct), gfp & GFP_RECLAIM_MASK) */
    {
        kaddr = vw_kmalloc_call(c, PyTuple_GET_ITEM(c->consts, WC_SIZEOF_VM),
                                (gfp & c->reclaim) | c->zero, node);
        if (!kaddr) return NULL;
    }
    int t = PyObject_IsTrue(kaddr);
    if (t < 0) goto error;
    if (!t) goto vm_struct_failed;
    {
        /* VmStruct(0, 0, flags, caller, None, 0, 0, 0, requested, 0, kaddr) */
        PyObject *a[11] = {small_zero, small_zero, vw_vm_flags_alloc, caller, Py_None,
                           small_zero, small_zero, small_zero, NULL, small_zero, kaddr};
        PyObject *rq = PyLong_FromUnsignedLongLong(real_size);
        if (!rq) goto error;
        a[8] = rq;
        area = PyObject_Vectorcall((PyObject *)vw_vmstruct_type, a, 11, NULL);
        Py_DECREF(rq);
        if (!area) goto error;
    }
    {
        /* alloc_vmap_area(size + guard, 1, VMALLOC_START, VMALLOC_END, ...): the compiled
         * alloc_vmap_area_once first, as VmapSpace.alloc_vmap_area does, else the method */
        tmp = PyLong_FromUnsignedLongLong(size + 4096);
        if (!tmp) goto error;
        PyObject *a[8] = {c->space, tmp, small_one, PyTuple_GET_ITEM(c->consts, WC_VSTART),
                          PyTuple_GET_ITEM(c->consts, WC_VEND), cpu, small_zero, area};
        if (vw_space_twin_on(WS(W_C_ALLOC_ONCE)) &&
            !vw_shadowed_o(c, c->space, WS(W_ALLOC_VMAP_AREA), O_ALLOC_VMAP_AREA)) {
            va = sp_alloc_vmap_area_once(NULL, a, 8);
        } else {
            va = PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
        }
        if (!va) goto error;
        if (va == Py_None) {
            Py_DECREF(va);
            PyObject *b[8] = {c->space, tmp, small_one, PyTuple_GET_ITEM(c->consts, WC_VSTART),
                              PyTuple_GET_ITEM(c->consts, WC_VEND), cpu, Py_False, area};
            va = vw_meth(WS(W_ALLOC_VMAP_AREA), b, 5, vw_kw_alloc);
            if (!va) goto error;
        }
        Py_CLEAR(tmp);
    }
    if (!PyObject_TypeCheck(va, vw_vmaparea_type)) {
        tmp = vw_kfree_call(c, kaddr);
        if (!tmp) goto error;
        Py_CLEAR(tmp);
        goto vm_struct_failed;
    }
    /* setup_vmalloc_vm, inlined as the reference does */
    {
        PyObject *vs = PyObject_GetAttr(va, WS(W_VA_START));
        if (!vs) goto error;
        int r = PyObject_SetAttr(area, WS(W_ADDR), vs);
        Py_DECREF(vs);
        if (r < 0) goto error;
        vs = PyObject_GetAttr(va, WS(W_VA_START));
        PyObject *ve = vs ? PyObject_GetAttr(va, WS(W_VA_END)) : NULL;
        PyObject *sz = ve ? PyNumber_Subtract(ve, vs) : NULL;
        Py_XDECREF(vs);
        Py_XDECREF(ve);
        if (!sz) goto error;
        r = PyObject_SetAttr(area, WS(W_SIZE), sz);
        if (r == 0 && !c->requested) r = PyObject_SetAttr(area, WS(W_REQUESTED_SIZE), sz);
        Py_DECREF(sz);
        if (r < 0 || PyObject_SetAttr(va, WS(W_VM), area) < 0) goto error;
    }
    /* __vmalloc_area_node(area, gfp, PAGE_KERNEL, PAGE_SHIFT, node) */
    uint64_t array_size = nr_small * 8, warn_gfp, nested;
    if (c->pages_highmem) {
        warn_gfp = gfp;
        gfp |= c->highmem;
    } else {
        gfp |= c->highmem;
        warn_gfp = gfp;
    }
    nested = (gfp & c->reclaim) | c->zero;
    {
        PyObject *as = PyLong_FromUnsignedLongLong(array_size);
        if (!as) goto error;
        pages_addr = vw_kmalloc_call(c, as, nested, node);
        Py_DECREF(as);
        if (!pages_addr) goto error;
    }
    t = PyObject_IsTrue(pages_addr);
    if (t < 0) goto error;
    if (!t) {
        if (vw_warn_alloc(c, warn_gfp,
                          PyUnicode_FromFormat("vmalloc error: size %llu, failed to allocated "
                                               "page array size %llu",
                                               (unsigned long long)(nr_small * 4096),
                                               (unsigned long long)array_size)) < 0 ||
            vw_call_area_cpu(c, WS(W_FREE_VM_AREA), area, cpu) < 0)
            goto error;
        goto failed;
    }
    if (PyObject_SetAttr(area, WS(W_PAGES_ADDR), pages_addr) < 0 ||
        PyObject_SetAttr(area, WS(W_PAGE_ORDER), small_zero) < 0)
        goto error;
    {
        /* vm_area_alloc_pages(gfp | __GFP_NOWARN, node, 0, nr_small) */
        PyObject *g = PyLong_FromUnsignedLongLong(gfp | c->nowarn);
        if (!g) goto error;
        if (nr_small == 1) {
            /* its one-page case: alloc_pages, once more on failure */
            PyObject *a[4] = {c->phys, g, small_zero, node};
            tmp = vw_alloc_page0(c, gfp | c->nowarn, node); /* its usual case in C */
            if (tmp == Py_None) {
                Py_DECREF(tmp);
                tmp = vw_meth(WS(W_ALLOC_PAGES), a, 4, NULL);
                if (tmp == Py_None) {
                    Py_DECREF(tmp);
                    tmp = vw_meth(WS(W_ALLOC_PAGES), a, 4, NULL);
                }
            }
            Py_DECREF(g);
            if (!tmp) goto error;
            if (tmp == Py_None) {
                Py_CLEAR(tmp);
                PyObject *e[2] = {small_zero, vw_np_int64};
                pages = PyObject_Vectorcall(vw_np_empty, e, 1, vw_kw_dtype);
            } else {
                if (vw_u64(tmp, &pfn1) != 1) pfn1 = UINT64_MAX; /* (then map_pages maps it) */
                t2 = PyTuple_Pack(1, tmp);
                Py_CLEAR(tmp);
                if (!t2) goto error;
                PyObject *e[2] = {t2, vw_np_int64};
                pages = PyObject_Vectorcall(vw_np_array, e, 1, vw_kw_dtype);
                Py_CLEAR(t2);
            }
        } else {
            PyObject *nr = PyLong_FromUnsignedLongLong(nr_small);
            if (!nr) {
                Py_DECREF(g);
                goto error;
            }
            /* the bulk pages section's twin, else the method */
            pages = bk_vm_area_alloc_pages(c, gfp | c->nowarn, node, nr_small);
            if (pages == Py_None) {
                Py_CLEAR(pages);
                PyObject *a[5] = {c->self, g, node, small_zero, nr};
                pages = vw_meth(WS(W_VM_AREA_ALLOC_PAGES), a, 5, NULL);
            }
            Py_DECREF(nr);
            Py_DECREF(g);
        }
        if (!pages) goto error;
    }
    Py_ssize_t got = PyObject_Length(pages);
    if (got < 0) goto error;
    {
        PyObject *n = PyLong_FromSsize_t(got);
        if (!n) goto error;
        int r = PyObject_SetAttr(area, WS(W_PAGES), pages);
        if (r == 0) r = PyObject_SetAttr(area, WS(W_NR_PAGES), n);
        if (r == 0) r = vw_add_attr(c->self, WS(W_NR_VMALLOC_PAGES), n, 0);
        Py_DECREF(n);
        if (r < 0) goto error;
    }
    if ((uint64_t)got != nr_small) {
        if (vw_warn_alloc(c, warn_gfp,
                          PyUnicode_FromFormat("vmalloc error: size %llu, failed to allocate "
                                               "pages",
                                               (unsigned long long)got * 4096)) < 0 ||
            vw_call_area_cpu(c, WS(W_VMALLOC_AREA_FAIL), area, cpu) < 0)
            goto error;
        goto failed;
    }
    {
        /* _map_area() -> vmap_pages_range() -> map_pages(), inlined as the reference does */
        PyObject *n = PyLong_FromUnsignedLongLong(nr_small);
        if (!n) goto error;
        int r = vw_add_attr(c->self, WS(W_PTES_WRITTEN), n, 0);
        Py_DECREF(n);
        if (r < 0) goto error;
        PyObject *addr = PyObject_GetAttr(area, WS(W_ADDR));
        if (!addr) goto error;
        uint64_t a64;
        int one = 0;
        if (pfn1 != UINT64_MAX && vw_u64(addr, &a64) == 1 &&
            (PyObject *)Py_TYPE(c->pgt) == PyTuple_GET_ITEM(c->consts, WC_PGT_TYPE) &&
            !vw_shadowed_o(c, c->pgt, WS(W_MAP_PAGES), O_MAP_PAGES)) {
            /* map_pages -> _map_one_pte, compiled for its usual case */
            one = vw_map_one_pte(c->pgt, a64, pfn1, prot);
        } else if (got > 1 && vw_u64(addr, &a64) == 1 &&
                   (PyObject *)Py_TYPE(c->pgt) == PyTuple_GET_ITEM(c->consts, WC_PGT_TYPE) &&
                   !vw_shadowed_o(c, c->pgt, WS(W_MAP_PAGES), O_MAP_PAGES)) {
            /* map_pages -> _map_ptes into cached tables (bulk pages section) */
            one = bk_map_ptes(c->pgt, a64, pages, prot);
        }
        if (one < 0) {
            Py_DECREF(addr);
            goto error;
        }
        if (PyErr_Occurred()) {
            Py_DECREF(addr);
            goto error;
        }
        if (one) {
            Py_DECREF(addr);
            goto mapped;
        }
        PyObject *sh = PyLong_FromLong(12);
        if (!sh) {
            Py_DECREF(addr);
            goto error;
        }
        PyObject *a[5] = {c->pgt, addr, pages, PyTuple_GET_ITEM(c->consts, WC_PROT), sh};
        tmp = vw_meth(WS(W_MAP_PAGES), a, 5, NULL);
        Py_DECREF(addr);
        Py_DECREF(sh);
        if (!tmp) goto error;
        t = PyObject_IsTrue(tmp);
        Py_CLEAR(tmp);
        if (t < 0) goto error;
        if (t) {
            if (vw_warn_alloc(c, warn_gfp,
                              PyUnicode_FromFormat("vmalloc error: size %llu, failed to map "
                                                   "pages",
                                                   (unsigned long long)got * 4096)) < 0 ||
                vw_call_area_cpu(c, WS(W_VMALLOC_AREA_FAIL), area, cpu) < 0)
                goto error;
            goto failed;
        }
    }
mapped: {
        /* area.flags &= ~VM_UNINITIALIZED (clear_vm_uninitialized_flag) */
        PyObject *f = PyObject_GetAttr(area, WS(W_FLAGS));
        if (!f) goto error;
        uint64_t fv;
        int ok = vw_u64(f, &fv);
        Py_DECREF(f);
        if (ok != 1) {
            if (ok == 0) PyErr_SetString(PyExc_TypeError, "vm_struct flags is not an int");
            goto error;
        }
        if (vw_setattr_u64(area, WS(W_FLAGS), fv & ~(uint64_t)0x020) < 0) goto error;
    }
    result = PyObject_GetAttr(area, WS(W_ADDR));
    goto done;
vm_struct_failed:
    if (vw_warn_alloc(c, gfp,
                      PyUnicode_FromFormat("vmalloc error: size %llu, vm_struct allocation "
                                           "failed",
                                           (unsigned long long)real_size)) < 0)
        goto error;
failed:
    Py_INCREF(small_zero);
    result = small_zero;
    goto done;
error:
    result = NULL;
done:
    Py_XDECREF(kaddr);
    Py_XDECREF(area);
    Py_XDECREF(va);
    Py_XDECREF(pages_addr);
    Py_XDECREF(pages);
    Py_XDECREF(tmp);
    Py_XDECREF(t2);
    (void)size_o;
    return result;
}

/* __vmalloc_node_range for vmalloc()/vzalloc()/__vmalloc(): mirrors Vmalloc.vmalloc's
 * unobserved path (_enter, __vmalloc_node_range, _leave, the stats). Arguments: the
 * Vmalloc, size, gfp, cpu, caller. The address, 0, or None (declined, nothing changed). */
static PyObject *vw_vmalloc_node_range(PyObject *mod, PyObject *const *args,
                                       Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "__vmalloc_node_range takes 5 arguments");
        return NULL;
    }
    PyObject *size_o = args[1], *gfp_o = args[2], *cpu = args[3], *caller = args[4];
    wctx_t c = {0};
    int rc = wctx_get(args[0], &c);
    if (rc <= 0) goto decline_rc;
    uint64_t size, gfp, totalram;
    if ((rc = vw_u64(size_o, &size)) != 1 || (rc = vw_u64(gfp_o, &gfp)) != 1) goto decline_rc;
    rc = 0;
    if (size == 0 || size > c.umax || size > UINT64_MAX - 4095) goto decline_rc;
    if (gfp != c.gfp_kernel && gfp != (c.gfp_kernel | c.zero)) goto decline_rc;
    if ((rc = vw_common_checks(&c, cpu)) != 1) goto decline_rc;
    /* totalram_pages: the property's memo (_totalram) once it is set, else the property */
    {
        long long memo = -1;
        if ((PyObject *)Py_TYPE(c.phys) == PyTuple_GET_ITEM(c.consts, WC_PHYS_TYPE) &&
            (rc = vw_attr_ll(c.phys, WS(W_TOTALRAM_MEMO), &memo)) < 0)
            goto decline_rc;
        if (memo >= 0)
            totalram = (uint64_t)memo;
        else if ((rc = vw_attr_u64(c.phys, WS(W_TOTALRAM), &totalram)) != 1)
            goto decline_rc;
    }
    rc = 0;
    if ((size >> 12) > totalram) goto decline_rc;
    uint64_t aligned = (size + 4095) & ~(uint64_t)4095;
    if ((aligned >> 12) * 8 > 4096) goto decline_rc; /* the pages array: a nested vmalloc */
    if (vw_depth(&c, 1) < 0) goto fail; /* _enter */
    PyObject *addr = vw_vmalloc_body(&c, size, aligned, gfp, size_o, vw_numa_no_node, caller,
                                     cpu);
    if (vw_leave_finally(&c, addr == NULL) < 0) {
        Py_XDECREF(addr);
        goto fail;
    }
    int t = PyObject_IsTrue(addr);
    if (t < 0 || vw_stat(&c, WS(t ? W_VMALLOC : W_FAILURES)) < 0) {
        Py_DECREF(addr);
        goto fail;
    }
    wctx_release(&c);
    return addr;
decline_rc:
    wctx_release(&c);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
fail:
    wctx_release(&c);
    return NULL;
}

/* vfree: mirrors Vmalloc.vfree outside interrupt context, with vfree_now,
 * remove_vm_area, free_unmap_vmap_area and kvfree_now inlined (6.x: no __vunmap helper),
 * for an area without VM_FLUSH_RESET_PERMS or VM_MAP_PUT_PAGES whose pages array (if
 * any) is a kmalloc object. Arguments: the Vmalloc, addr, cpu. True when it freed, None
 * when it declined (nothing changed). */
static PyObject *vw_vfree(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "vfree takes 3 arguments");
        return NULL;
    }
    PyObject *addr_o = args[1], *cpu = args[2];
    PyObject *va = NULL, *vm = NULL, *pages = NULL, *pages_addr = NULL, *tmp = NULL;
    wctx_t c = {0};
    int rc = wctx_get(args[0], &c);
    uint64_t addr, flags, nr_pages, pa = 0;
    Py_ssize_t len = 0;
    if (rc <= 0) goto decline;
    if ((rc = vw_u64(addr_o, &addr)) != 1) goto decline;
    rc = 0;
    if (addr == 0 || addr > c.umax || (addr & 4095)) goto decline;
    if ((rc = vw_common_checks(&c, cpu)) != 1) goto decline;
    {
        /* space.find_vmap_area(addr): the address's node in C, else the method */
        va = vw_shadowed_o(&c, c.space, WS(W_FIND_VMAP_AREA), O_FIND_VMAP_AREA)
                 ? Py_NewRef(Py_None)
                 : vw_find_first_node(c.space, addr);
        if (!va) goto error;
        if (va == Py_None) {
            Py_CLEAR(va);
            PyObject *a[2] = {c.space, addr_o};
            va = vw_meth(WS(W_FIND_VMAP_AREA), a, 2, NULL);
            if (!va) goto error;
        }
    }
    if (va == Py_None) goto decline;
    vm = PyObject_GetAttr(va, WS(W_VM));
    if (!vm) goto error;
    if (Py_TYPE(vm) != vw_vmstruct_type) goto decline;
    if ((rc = vw_attr_u64(vm, WS(W_FLAGS), &flags)) != 1) goto decline;
    rc = 0;
    if (flags & (0x100 | 0x200)) goto decline; /* VM_FLUSH_RESET_PERMS, VM_MAP_PUT_PAGES */
    pages = PyObject_GetAttr(vm, WS(W_PAGES));
    if (!pages) goto error;
    if ((rc = vw_attr_u64(vm, WS(W_NR_PAGES), &nr_pages)) != 1) goto decline;
    rc = 0;
    if (pages != Py_None && nr_pages) {
        len = PyObject_Length(pages);
        if (len < 0) goto error;
        if ((uint64_t)len != nr_pages) goto decline;
    }
    pages_addr = PyObject_GetAttr(vm, WS(W_PAGES_ADDR));
    if (!pages_addr) goto error;
    if ((rc = vw_u64(pages_addr, &pa)) != 1) goto decline;
    rc = 0;
    if (pa && c.vstart <= pa && pa < c.vend) goto decline; /* a nested vfree */
    /* state changes from here */
    if (vw_depth(&c, 1) < 0) goto error; /* _enter */
    int failed = 0;
    {
        /* space.find_unlink_vmap_area(addr): its compiled twin, else the method */
        PyObject *a[3] = {c.space, addr_o, NULL};
        tmp = vw_space_twin_on(WS(W_C_FIND_UNLINK)) &&
                      !vw_shadowed_o(&c, c.space, WS(W_FIND_UNLINK), O_FIND_UNLINK)
                  ? sp_find_unlink_vmap_area(NULL, a, 2)
                  : Py_NewRef(Py_None);
        if (!tmp || PyErr_Occurred()) goto body_error;
        if (tmp == Py_None) {
            Py_CLEAR(tmp);
            tmp = vw_meth(WS(W_FIND_UNLINK), a, 2, NULL);
            if (!tmp) goto body_error;
        }
        Py_CLEAR(tmp);
        /* free_unmap_vmap_area(), inlined: pgt.unmap(va_start, va_end - va_start) */
        PyObject *vs = PyObject_GetAttr(va, WS(W_VA_START));
        PyObject *ve = vs ? PyObject_GetAttr(va, WS(W_VA_END)) : NULL;
        PyObject *sz = ve ? PyNumber_Subtract(ve, vs) : NULL;
        Py_XDECREF(ve);
        if (!sz) {
            Py_XDECREF(vs);
            goto body_error;
        }
        uint64_t s64, z64;
        int done = 0;
        if (vw_u64(vs, &s64) == 1 && vw_u64(sz, &z64) == 1 &&
            (PyObject *)Py_TYPE(c.pgt) == PyTuple_GET_ITEM(c.consts, WC_PGT_TYPE) &&
            !vw_shadowed_o(&c, c.pgt, WS(W_UNMAP), O_UNMAP))
            done = vw_unmap_one_pmd(c.pgt, s64, z64);
        if (done == 0 && !PyErr_Occurred() && vw_u64(vs, &s64) == 1 && vw_u64(sz, &z64) == 1 &&
            (PyObject *)Py_TYPE(c.pgt) == PyTuple_GET_ITEM(c.consts, WC_PGT_TYPE) &&
            !vw_shadowed_o(&c, c.pgt, WS(W_UNMAP), O_UNMAP))
            done = bk_unmap_cached(c.pgt, s64, z64); /* several PMDs (bulk pages section) */
        if (done < 0 || PyErr_Occurred()) {
            Py_DECREF(vs);
            Py_DECREF(sz);
            goto body_error;
        }
        if (!done) {
            PyObject *u[3] = {c.pgt, vs, sz};
            tmp = vw_meth(WS(W_UNMAP), u, 3, NULL);
        } else {
            tmp = Py_NewRef(Py_None);
        }
        Py_DECREF(vs);
        Py_DECREF(sz);
        if (!tmp) goto body_error;
        Py_CLEAR(tmp);
        /* space.free_vmap_area_noflush(va, cpu=cpu): its compiled twin (then the lazy
         * threshold's purge start, as the method does), else the method */
        PyObject *f[3] = {c.space, va, cpu};
        tmp = vw_space_twin_on(WS(W_C_FREE_NOFLUSH)) &&
                      !vw_shadowed_o(&c, c.space, WS(W_FREE_NOFLUSH), O_FREE_NOFLUSH)
                  ? sp_free_vmap_area_noflush(NULL, f, 2)
                  : Py_NewRef(Py_None);
        if (!tmp || PyErr_Occurred()) goto body_error;
        if (tmp == Py_None) {
            Py_CLEAR(tmp);
            tmp = vw_meth(WS(W_FREE_NOFLUSH), f, 2, vw_kw_cpu);
            if (!tmp) goto body_error;
        } else {
            int past = PyObject_IsTrue(tmp);
            Py_CLEAR(tmp);
            if (past < 0) goto body_error;
            if (past) {
                tmp = PyObject_CallMethodNoArgs(c.space, WS(W_LAZY_PASSED));
                if (!tmp) goto body_error;
            }
        }
        Py_CLEAR(tmp);
    }
    {
        /* if self.user_mapped: self._unmap_user_pages(vm.addr) */
        PyObject *um = PyObject_GetAttr(c.self, WS(W_USER_MAPPED));
        if (!um) goto body_error;
        int t = PyObject_IsTrue(um);
        Py_DECREF(um);
        if (t < 0) goto body_error;
        if (t) {
            PyObject *vaddr = PyObject_GetAttr(vm, WS(W_ADDR));
            if (!vaddr) goto body_error;
            PyObject *a[2] = {c.self, vaddr};
            tmp = vw_meth(WS(W_UNMAP_USER_PAGES), a, 2, NULL);
            Py_DECREF(vaddr);
            if (!tmp) goto body_error;
            Py_CLEAR(tmp);
        }
    }
    if (pages != Py_None && nr_pages) {
        if (nr_pages == 1) {
            PyObject *p0 = PySequence_GetItem(pages, 0);
            PyObject *pfn = p0 ? PyNumber_Long(p0) : NULL;
            Py_XDECREF(p0);
            if (!pfn) goto body_error;
            int done = vw_free_page0(&c, pfn); /* its usual case in C */
            if (done < 0) {
                Py_DECREF(pfn);
                goto body_error;
            }
            if (done) {
                tmp = Py_NewRef(Py_None);
            } else {
                PyObject *a[3] = {c.phys, pfn, small_zero};
                tmp = vw_meth(WS(W_FREE_PAGES), a, 3, NULL);
            }
            Py_DECREF(pfn);
        } else {
            /* free_pages_bulk: the bulk pages section's twin on the array, else the method */
            int done = bk_vfree_pages(c.phys, pages, nr_pages);
            if (done < 0) goto body_error;
            if (done) {
                tmp = Py_NewRef(Py_None);
            } else {
                PyObject *lst = PyObject_CallMethodNoArgs(pages, WS(W_TOLIST));
                if (!lst) goto body_error;
                PyObject *a[2] = {c.phys, lst};
                tmp = vw_meth(WS(W_FREE_PAGES_BULK), a, 2, NULL);
                Py_DECREF(lst);
            }
        }
        if (!tmp) goto body_error;
        Py_CLEAR(tmp);
        PyObject *n = PyLong_FromUnsignedLongLong(nr_pages);
        if (!n) goto body_error;
        int r = vw_add_attr(c.self, WS(W_NR_VMALLOC_PAGES), n, 1);
        Py_DECREF(n);
        if (r < 0) goto body_error;
    }
    if (pa) {
        /* kvfree_now(): a kmalloc address, kfree */
        tmp = vw_kfree_call(&c, pages_addr);
        if (!tmp) goto body_error;
        int t = PyObject_IsTrue(tmp);
        Py_CLEAR(tmp);
        if (t < 0) goto body_error;
        if (!t) {
            PyObject *w[2] = {c.log, PyUnicode_FromFormat("kfree: invalid object 0x%llx",
                                                          (unsigned long long)pa)};
            if (!w[1]) goto body_error;
            tmp = vw_meth(WS(W_WARN), w, 2, NULL);
            Py_DECREF(w[1]);
            if (!tmp) goto body_error;
            Py_CLEAR(tmp);
        }
    }
    {
        PyObject *k = PyObject_GetAttr(vm, WS(W_KADDR));
        if (!k) goto body_error;
        tmp = vw_kfree_call(&c, k);
        Py_DECREF(k);
        if (!tmp) goto body_error;
        Py_CLEAR(tmp);
    }
    if (vw_stat(&c, WS(W_VFREE)) < 0) goto body_error;
    goto body_done;
body_error:
    failed = 1;
body_done:
    if (vw_leave_finally(&c, failed) < 0) goto error;
    Py_XDECREF(va);
    Py_XDECREF(vm);
    Py_XDECREF(pages);
    Py_XDECREF(pages_addr);
    wctx_release(&c);
    Py_RETURN_TRUE;
decline:
    Py_XDECREF(va);
    Py_XDECREF(vm);
    Py_XDECREF(pages);
    Py_XDECREF(pages_addr);
    wctx_release(&c);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
error:
    Py_XDECREF(va);
    Py_XDECREF(vm);
    Py_XDECREF(pages);
    Py_XDECREF(pages_addr);
    Py_XDECREF(tmp);
    wctx_release(&c);
    return NULL;
}

/* =====================================================================================
 * test-vmalloc paths (helper tvspeed). test_vmalloc's cases often allocate the only
 * object of a kmalloc cache (a vm_struct, a one-page pages array) and free it again, so
 * SlabAllocator.kmalloc makes a slab and kfree destroys it on most calls (the model
 * frees an empty slab at once). These are the twins of those two branches for an
 * order-0 slab, called by the whole vmalloc/vfree when the usual-case twins decline:
 * kmalloc with no partial slab (alloc_pages of one page through its own twin, the
 * owner tag, the Slab object, the cache's and _page_slab's entries, then the object as
 * usual) and kfree of a slab's last object (the object freed, the slab off the partial
 * list and out of the dicts, its page back through free_pages' twin or the method).
 * Both decline, having changed nothing, when the SlabAllocator's _c_slab_pages switch
 * is off, kmalloc/kfree is replaced, the slab's order is not 0 or anything is not of the
 * exact type the reference builds; the page allocator's twins keep their own checks and
 * switches (a replaced alloc_pages declines the new slab; a replaced free_pages or a
 * due pcp drain runs the method).
 * ===================================================================================== */

#define TV_OWNER_SLAB 5 /* slab.OWNER_SLAB */
static PyObject *tv_s_switch, *tv_s_order, *tv_s_slabs, *tv_s_new_free_map, *tv_s_slab_pages,
    *tv_s_page_address;

static int tv_strings(void) {
    if (tv_s_switch) return 0;
    tv_s_order = PyUnicode_InternFromString("order");
    tv_s_slabs = PyUnicode_InternFromString("slabs");
    tv_s_new_free_map = PyUnicode_InternFromString("new_free_map");
    tv_s_slab_pages = PyUnicode_InternFromString("slab_pages");
    tv_s_page_address = PyUnicode_InternFromString("page_address");
    tv_s_switch = PyUnicode_InternFromString("_c_slab_pages");
    return (tv_s_order && tv_s_slabs && tv_s_new_free_map && tv_s_slab_pages &&
            tv_s_page_address && tv_s_switch)
               ? 0
               : -1;
}

/* The SlabAllocator's instance dict when the switch is on and kmalloc (o = O_KMALLOC)
 * or kfree (O_KFREE) is the class's own: borrowed; NULL otherwise (an error set or not). */
static PyObject *tv_slab_dict(wctx_t *c, PyObject *name, int o) {
    PyObject *sa = c->slab, *sa_d;
    if (tv_strings() < 0) return NULL;
    if ((PyObject *)Py_TYPE(sa) != PyTuple_GET_ITEM(c->consts, WC_SLAB_TYPE) ||
        !(sa_d = vw_idict(sa)) || vw_shadowed_o(c, sa, name, o))
        return NULL;
    PyObject *sw = PyDict_GetItemWithError(sa_d, tv_s_switch);
    return sw == Py_True ? sa_d : NULL;
}

/* SlabAllocator.kmalloc(size, gfp, node) when the size's cache (memoised) has no partial
 * slab and its slabs are order 0: the address (new int); Py_None: declined, nothing
 * changed; NULL: error. */
static PyObject *tv_kmalloc_new_slab(wctx_t *c, PyObject *size_o, uint64_t gfp, PyObject *node) {
    PyObject *sa_d, *sc, *cache, *cache_d, *partial, *slabs, *nfm, *ps, *pfn_o = NULL;
    PyObject *slab = NULL, *fm = NULL, *addr = NULL, *res = NULL;
    col_t ow = {0};
    long long order, csize, objects, spages;
    int r;
    if (!(sa_d = tv_slab_dict(c, WS(W_KMALLOC), O_KMALLOC))) goto maybe_error;
    sc = PyDict_GetItemWithError(sa_d, WS(W_SIZE_CACHE));
    if (!sc || !PyDict_CheckExact(sc)) goto maybe_error;
    cache = PyDict_GetItemWithError(sc, size_o);
    if (!cache || (PyObject *)Py_TYPE(cache) != PyTuple_GET_ITEM(c->consts, WC_CACHE_CLS) ||
        !(cache_d = vw_idict(cache)))
        goto maybe_error;
    partial = PyDict_GetItemWithError(cache_d, WS(W_PARTIAL));
    slabs = partial ? PyDict_GetItemWithError(cache_d, tv_s_slabs) : NULL;
    nfm = slabs ? PyDict_GetItemWithError(cache_d, tv_s_new_free_map) : NULL;
    ps = nfm ? PyDict_GetItemWithError(sa_d, WS(W_PAGE_SLAB)) : NULL;
    if (!ps || !PyList_CheckExact(partial) || PyList_GET_SIZE(partial) != 0 ||
        !PyDict_CheckExact(slabs) || !PyBytes_CheckExact(nfm) || !PyDict_CheckExact(ps))
        goto maybe_error;
    if ((r = vw_dll(cache_d, tv_s_order, &order)) != 1 ||
        (r = vw_dll(cache_d, WS(W_SIZE), &csize)) != 1 ||
        (r = vw_dll(cache_d, WS(W_OBJECTS), &objects)) != 1 ||
        (r = vw_dll(sa_d, tv_s_slab_pages, &spages)) != 1)
        goto r_decline;
    if (order != 0 || objects <= 0 || PyBytes_GET_SIZE(nfm) != objects) goto decline;
    if ((r = col_get(c->phys, WS(W_POWNER), &ow)) != 1) goto r_decline;
    Py_INCREF(cache);
    /* state changes from here: pfn = phys.alloc_pages(gfp & lowmem, 0, node) */
    pfn_o = vw_alloc_page0(c, gfp & ~(c->highmem | c->zero), node);
    if (!pfn_o) goto error_c;
    if (pfn_o == Py_None) { /* (its method: the refill, the slow path; nothing changed) */
        Py_CLEAR(pfn_o);
        Py_DECREF(cache);
        goto decline;
    }
    {
        Py_ssize_t p = PyLong_AsSsize_t(pfn_o);
        if (p == -1 && PyErr_Occurred()) goto error_c;
        if (p < 0 || p >= COL_LEN(ow)) {
            PyErr_SetString(PyExc_IndexError, "pfn outside the owner column");
            goto error_c;
        }
        col_wr(&ow, p, TV_OWNER_SLAB); /* phys.set_owner(pfn, OWNER_SLAB, 1) */
        PyObject *ord = PyDict_GetItemWithError(cache_d, tv_s_order);
        PyObject *sz = ord ? PyDict_GetItemWithError(cache_d, WS(W_SIZE)) : NULL;
        PyObject *ob = sz ? PyDict_GetItemWithError(cache_d, WS(W_OBJECTS)) : NULL;
        if (!ob) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "order");
            goto error_c;
        }
        PyObject *a[4] = {pfn_o, ord, sz, ob};
        slab = PyObject_Vectorcall(PyTuple_GET_ITEM(c->consts, WC_SLAB_CLS), a, 4, NULL);
        if (!slab) goto error_c;
        PyObject *pa[2] = {c->phys, pfn_o}; /* slab.addr = self._addr(pfn) */
        addr = PyObject_VectorcallMethod(tv_s_page_address, pa, 2, NULL);
        if (!addr || PyObject_SetAttr(slab, WS(W_ADDR), addr) < 0) goto error_c;
        fm = PyByteArray_FromObject(nfm);
        if (!fm || PyObject_SetAttr(slab, WS(W_FREE_MAP), fm) < 0) goto error_c;
        if (PyDict_SetItem(slabs, pfn_o, slab) < 0 || PyList_Append(partial, slab) < 0 ||
            PyDict_SetItem(ps, pfn_o, slab) < 0 || vw_dset(sa_d, tv_s_slab_pages, spages + 1) < 0)
            goto error_c;
    }
    Py_DECREF(cache);
    /* the object, from the new partial slab: the usual-case twin or the method */
    res = vw_kmalloc(c, size_o, gfp);
    if (res == Py_None) {
        Py_DECREF(res);
        PyObject *g = PyLong_FromUnsignedLongLong(gfp);
        if (!g) goto error;
        PyObject *a[4] = {c->slab, size_o, g, node};
        res = vw_meth(WS(W_KMALLOC), a, 4, NULL);
        Py_DECREF(g);
    }
    goto out;
r_decline:
    if (r < 0) goto error;
    goto decline;
maybe_error:
    if (PyErr_Occurred()) goto error;
decline:
    res = Py_NewRef(Py_None);
    goto out;
error_c:
    Py_DECREF(cache);
error:
    res = NULL;
out:
    col_release(&ow);
    Py_XDECREF(pfn_o);
    Py_XDECREF(slab);
    Py_XDECREF(fm);
    Py_XDECREF(addr);
    return res;
}

/* ======================================================= end of test-vmalloc section */

/* Forward declarations of sections defined after PyInit (one block per section). */
/* replay batch (replayc) declarations */
static PyObject *rb_init(PyObject *, PyObject *);
static PyObject *rb_run(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rb_adopt_twin(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rb_hidden_guess_twin(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rb_seed_busy(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rb_pool_ranges(PyObject *, PyObject *);
static PyObject *rb_insert_by_purge_order(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rb_ranges_below(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rb_alloc_index(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rt_overlapping_py(PyObject *, PyObject *const *, Py_ssize_t); /* rtail */
static PyObject *rt_pooled_overlapping(PyObject *, PyObject *const *, Py_ssize_t);

/* bulk pages (bulkc) declarations */
static PyObject *bk_init_ptes(PyObject *, PyObject *);
static PyObject *bk_py_map(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *bk_py_unmap(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *bk_init(PyObject *, PyObject *);
static PyObject *bk_py_alloc_bulk(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *bk_py_free_bulk(PyObject *, PyObject *const *, Py_ssize_t);

/* test-vmalloc harness (tvharness) declarations */
static PyObject *tv_loops(PyObject *, PyObject *const *, Py_ssize_t);

/* replay purge (rpurge) declarations */
static PyObject *rp_begin_purge_nodes(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rp_batch_without(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rp_stamp(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rp_insert_from(PyObject *, PyObject *const *, Py_ssize_t);

/* replay divergence (rdiverge) declarations */
static PyObject *rd_event_table(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rd_lock_order_next(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rd_next_alloc_in(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rd_untouched(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rd_prev_of_task(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rd_last_alloc_at(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rd_shrink_fit(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rd_cpu_before(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rd_where_tree(PyObject *, PyObject *const *, Py_ssize_t);
static PyObject *rd_undo_alloc(PyObject *, PyObject *const *, Py_ssize_t);

static PyMethodDef methods[] = {
    /* whole operations (speedcore) */
    {"alloc_vmap_area_once", (PyCFunction)(void (*)(void))sp_alloc_vmap_area_once,
     METH_FASTCALL,
     "alloc_vmap_area_once(space, size, align, vstart, vend, cpu, va_flags, vm) -> va | None"},
    {"free_vmap_area_noflush", (PyCFunction)(void (*)(void))sp_free_vmap_area_noflush,
     METH_FASTCALL, "free_vmap_area_noflush(space, va) -> past lazy_max_pages | None"},
    {"pvm_find_va_enclose_addr", (PyCFunction)(void (*)(void))sp_pvm_find_va_enclose_addr,
     METH_FASTCALL, "pvm_find_va_enclose_addr(root, addr) -> va | None"},
    {"find_unlink_vmap_area", (PyCFunction)(void (*)(void))sp_find_unlink_vmap_area,
     METH_FASTCALL, "find_unlink_vmap_area(space, addr) -> va | None"},
    {"purge_vmap_node", (PyCFunction)(void (*)(void))sp_purge_vmap_node, METH_FASTCALL,
     "purge_vmap_node(space, vn, purge_list, skip_populate) -> True | None"},
    {"init_space", sp_init_space, METH_VARARGS,
     "init_space(VmapSpace, LowestMatch, NodePools, NoPools, deque, Decision, BUSY, LAZY, POOL)"},
    {"new_vmap_area", sp_new_vmap_area, METH_VARARGS, "new_vmap_area(start, end)"},
    /* tree pieces */
    {"init_lowest_match", sp_init_lowest_match, METH_O,
     "init_lowest_match(reference): the Python search, for values past 64 bits"},
    {"init_rbtree", sp_init_rbtree, METH_VARARGS, "init_rbtree(RBNode, RBRoot)"},
    {"init_vmap_area", sp_init_vmap_area, METH_VARARGS,
     "init_vmap_area(VmapArea, FREE_AUGMENT, VaState.FREE, VaState.DETACHED)"},
    {"rb_insert_color", sp_rb_insert_color, METH_VARARGS, "rb_insert_color(node, root)"},
    {"rb_insert_augmented", sp_rb_insert_augmented, METH_VARARGS,
     "rb_insert_augmented(node, root, augment)"},
    {"rb_erase", sp_rb_erase, METH_VARARGS, "rb_erase(node, root)"},
    {"rb_erase_augmented", sp_rb_erase_augmented, METH_VARARGS,
     "rb_erase_augmented(node, root, augment)"},
    {"propagate", sp_propagate, METH_VARARGS, "propagate(node, stop)"},
    {"busy_find", sp_busy_find, METH_VARARGS, "busy_find(root, addr)"},
    {"busy_insert", sp_busy_insert, METH_VARARGS, "busy_insert(root, va)"},
    {"busy_unlink", sp_busy_unlink, METH_VARARGS, "busy_unlink(root, addr)"},
    {"find_va_links", sp_find_va_links, METH_VARARGS, "find_va_links(start, va_start, va_end)"},
    {"merge_or_add", sp_merge_or_add, METH_VARARGS,
     "merge_or_add(root, va, each_step) -> (block, nr_free delta) | (None, other)"},
    {"va_clip", sp_va_clip, METH_VARARGS,
     "va_clip(root, va, nva, size, fits) -> nr_free delta | None | (lva, other)"},
    {"find_vmap_lowest_match", sp_find_vmap_lowest_match, METH_VARARGS,
     "find_vmap_lowest_match(tree, size, align, vstart, adjust_search_size, shift_vstart)"},
    /* speedvm section */
    {"phys_prep_bulk", vm_phys_prep_bulk, METH_VARARGS,
     "phys_prep_bulk(flags, order, refcount, owner, pfns, clear, set, owner) -> bool"},
    {"phys_free_bulk_mark", vm_phys_free_bulk_mark, METH_VARARGS,
     "phys_free_bulk_mark(flags, order, refcount, owner, zone, pfns, alloc, pgtable, pcp, "
     "owner_none) -> zone index or -1"},
    {"deque_popleft_into", vm_deque_popleft_into, METH_VARARGS,
     "deque_popleft_into(deque, n, out) -> count"},
    {"pte_fill", vm_pte_fill, METH_VARARGS,
     "pte_fill(table, idx, pfns, j, k, protval) -> -1 or first busy offset"},
    {"init_trace_events", vm_init_trace_events, METH_VARARGS,
     "init_trace_events(AllocVmapArea, FreeVmapAreaNoflush, PurgeVmapAreaLazy)"},
    {"parse_tracefs", vm_parse_tracefs, METH_VARARGS,
     "parse_tracefs(text, pos, lineno, cpus, out, tasks) -> (pos, lineno)"},
    /* replay (helper replayspeed) */
    {"short_fitting_below", (PyCFunction)(void (*)(void))sp_short_fitting_below, METH_FASTCALL,
     "short_fitting_below(blk, lo, hi, size, align, length, limit, ulong_max) -> list | None"},
    {"search_skipping", (PyCFunction)(void (*)(void))sp_search_skipping, METH_FASTCALL,
     "search_skipping(root_node, size, align, vstart, length, ulong_max, unreachable, high, "
     "old_blocks) -> va | None"},
    /* whole vmalloc/vfree (helper vmallocc) */
    {"init_vmalloc_whole", vw_init, METH_VARARGS,
     "init_vmalloc_whole(VmStruct, VmapArea, np.array, np.int64, np.empty, vmap.space globals)"},
    {"vmalloc_node_range", (PyCFunction)(void (*)(void))vw_vmalloc_node_range, METH_FASTCALL,
     "vmalloc_node_range(vmalloc, size, gfp, cpu, caller) -> addr | 0 | None"},
    {"vfree", (PyCFunction)(void (*)(void))vw_vfree, METH_FASTCALL,
     "vfree(vmalloc, addr, cpu) -> True | None"},
    /* replay batch (helper replayc): entries below */
    {"replay_run_init", rb_init, METH_VARARGS,
     "replay_run_init(Replayer, TraceHarness, VmapSpace, Beliefs, ReplayResult, PendingPurge, "
     "guards, DRIFT_RUN[, HIDDEN_SCAN_BLOCKS, EXACT_SCAN_BLOCKS, functions, MAX_CLASS])"},
    {"replay_adopt", (PyCFunction)(void (*)(void))rb_adopt_twin, METH_FASTCALL,
     "replay_adopt(replayer, ev, cpu, addr) -> the adopted busy area | None"},
    {"hidden_guess", (PyCFunction)(void (*)(void))rb_hidden_guess_twin, METH_FASTCALL,
     "hidden_guess(beliefs, node, idx, size, align) -> address | None | NotImplemented"},
    {"replay_run", (PyCFunction)(void (*)(void))rb_run, METH_FASTCALL,
     "replay_run(replayer, events, i, every) -> index of the first event left to Python"},
    {"seed_busy", (PyCFunction)(void (*)(void))rb_seed_busy, METH_FASTCALL,
     "seed_busy(space, start, end, flags) -> the busy area | None"},
    {"pool_ranges", rb_pool_ranges, METH_O, "pool_ranges(nodes) -> set of (start, end, node)"},
    {"insert_by_purge_order", (PyCFunction)(void (*)(void))rb_insert_by_purge_order,
     METH_FASTCALL, "insert_by_purge_order(pool, va, gen) -> None"},
    {"overlapping", (PyCFunction)(void (*)(void))rt_overlapping_py, METH_FASTCALL,
     "overlapping(areas, start, end) -> list of the areas overlapping [start, end) | None"},
    {"pooled_overlapping", (PyCFunction)(void (*)(void))rt_pooled_overlapping, METH_FASTCALL,
     "pooled_overlapping(nodes, start, end) -> list of (pool, area) overlapping | None"},
    {"ranges_below", (PyCFunction)(void (*)(void))rb_ranges_below, METH_FASTCALL,
     "ranges_below(blk, starts, i, parked, limit) -> list of (start, end) | None"},
    {"alloc_index", (PyCFunction)(void (*)(void))rb_alloc_index, METH_FASTCALL,
     "alloc_index(events, cls) -> {addr: [positions]} of the successful cls events"},

    /* (separator: keep) */
    /* bulk pages and multi-page vmalloc (helper bulkc): entries below */
    {"init_bulk_pages", bk_init, METH_VARARGS,
     "init_bulk_pages(PhysicalMemory, Zone, deque, names, originals, PG_BUDDY, PG_PCP, "
     "PG_ALLOC, PG_PGTABLE, OWNER_NONE, __GFP_ZERO)"},
    {"phys_alloc_pages_bulk", (PyCFunction)(void (*)(void))bk_py_alloc_bulk, METH_FASTCALL,
     "phys_alloc_pages_bulk(phys, gfp, nid, nr, out_list) -> count | None"},
    {"phys_free_pages_bulk", (PyCFunction)(void (*)(void))bk_py_free_bulk, METH_FASTCALL,
     "phys_free_pages_bulk(phys, pfns) -> True | None"},
    {"init_bulk_ptes", bk_init_ptes, METH_VARARGS, "init_bulk_ptes(PageTables, names, originals)"},
    {"pte_map_cached", (PyCFunction)(void (*)(void))bk_py_map, METH_FASTCALL,
     "pte_map_cached(pgt, addr, pages, prot) -> True | None"},
    {"pte_clear_cached", (PyCFunction)(void (*)(void))bk_py_unmap, METH_FASTCALL,
     "pte_clear_cached(pgt, addr, size) -> True | None"},

    /* (separator: keep) */
    /* test-vmalloc harness (helper tvharness): entries below */
    {"tv_loops", (PyCFunction)(void (*)(void))tv_loops, METH_FASTCALL,
     "tv_loops(h, n, sizes, pages, bytes) -> (loops done, failed allocation or -1, addrs)"},

    /* (separator: keep) */
    /* replay purge (helper rpurge): entries below */
    {"begin_purge_nodes", (PyCFunction)(void (*)(void))rp_begin_purge_nodes, METH_FASTCALL,
     "begin_purge_nodes(space, pending, batch, full) -> True | None"},
    {"batch_without", (PyCFunction)(void (*)(void))rp_batch_without, METH_FASTCALL,
     "batch_without(batch, done) -> list | None"},
    {"stamp", (PyCFunction)(void (*)(void))rp_stamp, METH_FASTCALL,
     "stamp(gen, added, seq) -> None"},
    {"insert_from", (PyCFunction)(void (*)(void))rp_insert_from, METH_FASTCALL,
     "insert_from(pool, va, gen, start) -> index | None"},

    /* (separator: keep) */
    /* replay divergence (helper rdiverge): entries below */
    {"event_table", (PyCFunction)(void (*)(void))rd_event_table, METH_FASTCALL,
     "event_table(events) -> (table, purge positions, {purge: busy until}) | None"},
    {"lock_order_next", (PyCFunction)(void (*)(void))rd_lock_order_next, METH_FASTCALL,
     "lock_order_next(table, i, ev, start, size, events, seconds) -> j | -1 | -2"},
    {"next_alloc_in", (PyCFunction)(void (*)(void))rd_next_alloc_in, METH_FASTCALL,
     "next_alloc_in(table, i, lo, start, size, limit) -> j | -1 | -2"},
    {"untouched", (PyCFunction)(void (*)(void))rd_untouched, METH_FASTCALL,
     "untouched(table, first, stop, start, size) -> bool | None"},
    {"prev_of_task", (PyCFunction)(void (*)(void))rd_prev_of_task, METH_FASTCALL,
     "prev_of_task(table, i, lookback) -> j | -1"},
    {"last_alloc_at", (PyCFunction)(void (*)(void))rd_last_alloc_at, METH_FASTCALL,
     "last_alloc_at(table, i, addr, lookback) -> k | -1 | -2"},
    {"shrink_fit", (PyCFunction)(void (*)(void))rd_shrink_fit, METH_FASTCALL,
     "shrink_fit(root, nodes, vstart, vend, size, align, length, mask, addr) -> bool | None"},
    {"cpu_before", (PyCFunction)(void (*)(void))rd_cpu_before, METH_FASTCALL,
     "cpu_before(table, i, ev, lookback, off_cpu) -> cpu | -1 | -2"},
    {"where_tree", (PyCFunction)(void (*)(void))rd_where_tree, METH_FASTCALL,
     "where_tree(space, parked, parked_starts, addr) -> loc | False | None"},
    {"undo_alloc", (PyCFunction)(void (*)(void))rd_undo_alloc, METH_FASTCALL,
     "undo_alloc(space, va) -> True | False | None"},

    /* (separator: keep) */
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_speedups",
                                    "Compiled twins of pyvmalloc's tree hot paths.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    s_root = PyUnicode_InternFromString("root");
    s_ulong_max = PyUnicode_InternFromString("ulong_max");
    s_stats = PyUnicode_InternFromString("stats");
    s_search_visits = PyUnicode_InternFromString("search_visits");
    s_rotate = PyUnicode_InternFromString("rotate");
    s_copy = PyUnicode_InternFromString("copy");
    s_propagate = PyUnicode_InternFromString("propagate");
    small_zero = PyLong_FromLong(0);
    small_one = PyLong_FromLong(1);
    if (!s_root || !s_ulong_max || !s_stats || !s_search_visits || !s_rotate || !s_copy ||
        !s_propagate || !small_zero || !small_one || init_whole_ops_strings() < 0)
        return NULL;
    return PyModule_Create(&moddef);
}

/* =====================================================================================
 * speedvm section: whole operations for the page allocator, the page tables and the
 * trace parser (phys/buddy.py, pgtable.py, trace/parse.py are the reference).
 *
 * Each function either does the whole operation exactly as the Python code would, or
 * reports that it cannot (returns -1 / stops) *before* changing anything, and the
 * caller takes the reference path.
 * ===================================================================================== */

/* A writable, C-contiguous buffer of `itemsize`-byte items (a numpy column). */
static int vm_buf(PyObject *o, Py_buffer *b, Py_ssize_t itemsize) {
    if (PyObject_GetBuffer(o, b, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (b->itemsize != itemsize || b->ndim != 1) {
        PyBuffer_Release(b);
        PyErr_SetString(PyExc_TypeError, "unexpected column layout");
        return -1;
    }
    return 0;
}

/* An exact int in [0, limit), else -1 (no exception left set). */
static inline Py_ssize_t vm_index(PyObject *o, Py_ssize_t limit) {
    if (!PyLong_CheckExact(o)) return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return -1;
    }
    return (v < 0 || v >= limit) ? -1 : (Py_ssize_t)v;
}

/* phys_prep_bulk(flags, order, refcount, owner, pfns, clear, set, owner_val):
 * order-0 _prep_new_page for every pfn of the list (after the pcp pops):
 * flags = (flags & ~clear) | set, order = 0, refcount = 1, owner = owner_val.
 * Returns False (nothing written) if a pfn is not a valid index. */
static PyObject *vm_phys_prep_bulk(PyObject *self, PyObject *args) {
    PyObject *fo, *oo, *ro, *wo, *pfns;
    unsigned int clear, set;
    int owner_val;
    if (!PyArg_ParseTuple(args, "OOOOO!IIi", &fo, &oo, &ro, &wo, &PyList_Type, &pfns, &clear,
                          &set, &owner_val))
        return NULL;
    Py_buffer bf, bo, br, bw;
    if (vm_buf(fo, &bf, 1) < 0) return NULL;
    if (vm_buf(oo, &bo, 1) < 0) goto e1;
    if (vm_buf(ro, &br, 4) < 0) goto e2;
    if (vm_buf(wo, &bw, 4) < 0) goto e3;
    Py_ssize_t n = PyList_GET_SIZE(pfns), lim = bf.len;
    if (bo.len != lim || br.len != 4 * lim || bw.len != 4 * lim) goto bad;
    for (Py_ssize_t i = 0; i < n; i++)
        if (vm_index(PyList_GET_ITEM(pfns, i), lim) < 0) goto bad;
    uint8_t *fl = bf.buf;
    int8_t *od = bo.buf;
    int32_t *rc = br.buf, *ow = bw.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t p = (Py_ssize_t)PyLong_AsLongLong(PyList_GET_ITEM(pfns, i));
        fl[p] = (uint8_t)((fl[p] & ~clear) | set);
        od[p] = 0;
        rc[p] = 1;
        ow[p] = owner_val;
    }
    PyBuffer_Release(&bw); PyBuffer_Release(&br); PyBuffer_Release(&bo); PyBuffer_Release(&bf);
    Py_RETURN_TRUE;
bad:
    PyBuffer_Release(&bw); PyBuffer_Release(&br); PyBuffer_Release(&bo); PyBuffer_Release(&bf);
    Py_RETURN_FALSE;
e3: PyBuffer_Release(&br);
e2: PyBuffer_Release(&bo);
e1: PyBuffer_Release(&bf);
    return NULL;
}

/* phys_free_bulk_mark(flags, order, refcount, owner, zone, pfns, alloc, pgtable, pcp,
 * owner_none) -> zone index, or -1 with nothing changed.
 * The column half of freeing many order-0 pages: every pfn must be a distinct valid
 * page with PG_alloc and without PG_pgtable, order 0, one reference, all in one zone;
 * then refcount = 0, owner = owner_none, flags = (flags & ~alloc) | pcp. */
static PyObject *vm_phys_free_bulk_mark(PyObject *self, PyObject *args) {
    PyObject *fo, *oo, *ro, *wo, *zo, *pfns;
    unsigned int alloc, pgtable, pcp;
    int owner_none;
    if (!PyArg_ParseTuple(args, "OOOOOO!IIIi", &fo, &oo, &ro, &wo, &zo, &PyList_Type, &pfns,
                          &alloc, &pgtable, &pcp, &owner_none))
        return NULL;
    Py_buffer bf, bo, br, bw, bz;
    long zi = -1;
    if (vm_buf(fo, &bf, 1) < 0) return NULL;
    if (vm_buf(oo, &bo, 1) < 0) goto e1;
    if (vm_buf(ro, &br, 4) < 0) goto e2;
    if (vm_buf(wo, &bw, 4) < 0) goto e3;
    if (vm_buf(zo, &bz, 1) < 0) goto e4;
    Py_ssize_t n = PyList_GET_SIZE(pfns), lim = bf.len;
    if (n == 0 || bo.len != lim || br.len != 4 * lim || bw.len != 4 * lim || bz.len != lim)
        goto done;
    uint8_t *fl = bf.buf, *zn = bz.buf;
    int8_t *od = bo.buf;
    int32_t *rc = br.buf, *ow = bw.buf;
    int z0 = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t p = vm_index(PyList_GET_ITEM(pfns, i), lim);
        if (p < 0 || (fl[p] & (alloc | pgtable)) != alloc || od[p] != 0 || rc[p] != 1) goto done;
        if (z0 < 0) z0 = zn[p];
        else if (zn[p] != z0) goto done;
    }
    /* distinct: the first visit drops the count to 0, a second visit would see 0 */
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t p = (Py_ssize_t)PyLong_AsLongLong(PyList_GET_ITEM(pfns, i));
        if (rc[p] != 1) {
            for (Py_ssize_t j = 0; j < i; j++)
                rc[PyLong_AsLongLong(PyList_GET_ITEM(pfns, j))] = 1; /* undo */
            goto done;
        }
        rc[p] = 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t p = (Py_ssize_t)PyLong_AsLongLong(PyList_GET_ITEM(pfns, i));
        ow[p] = owner_none;
        fl[p] = (uint8_t)((fl[p] & ~alloc) | pcp);
    }
    zi = z0;
done:
    PyBuffer_Release(&bz); PyBuffer_Release(&bw); PyBuffer_Release(&br);
    PyBuffer_Release(&bo); PyBuffer_Release(&bf);
    return PyLong_FromLong(zi);
e4: PyBuffer_Release(&bw);
e3: PyBuffer_Release(&br);
e2: PyBuffer_Release(&bo);
e1: PyBuffer_Release(&bf);
    return NULL;
}

/* deque_popleft_into(deque, n, out): append up to n items popped from the left of the
 * deque to the list out (the pcp list's head first); returns how many. */
static PyObject *vm_deque_popleft_into(PyObject *self, PyObject *args) {
    PyObject *dq, *out;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OnO!", &dq, &n, &PyList_Type, &out)) return NULL;
    Py_ssize_t have = PyObject_Length(dq);
    if (have < 0) return NULL;
    if (n > have) n = have;
    PyObject *pop = PyObject_GetAttrString(dq, "popleft");
    if (pop == NULL) return NULL;
    Py_ssize_t i = 0;
    for (; i < n; i++) {
        PyObject *v = PyObject_CallNoArgs(pop);
        if (v == NULL) break;
        int r = PyList_Append(out, v);
        Py_DECREF(v);
        if (r < 0) break;
    }
    Py_DECREF(pop);
    if (PyErr_Occurred()) return NULL;
    return PyLong_FromSsize_t(i);
}

/* pte_fill(table, idx, pfns, j, k, protval) -> -1, or the first busy slot offset b.
 * _map_ptes on one PTE table: table[idx + t] = (pfns[j + t] << PAGE_SHIFT) | protval
 * for t < k when none of those k slots is in use; else the entries before the first
 * used slot b are written (as the reference does) and b is returned. */
static PyObject *vm_pte_fill(PyObject *self, PyObject *args) {
    PyObject *to, *po;
    Py_ssize_t idx, j, k;
    unsigned long long prot;
    if (!PyArg_ParseTuple(args, "OnOnnK", &to, &idx, &po, &j, &k, &prot)) return NULL;
    Py_buffer bt, bp;
    if (vm_buf(to, &bt, 8) < 0) return NULL;
    if (PyObject_GetBuffer(po, &bp, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&bt);
        return NULL;
    }
    if (bp.itemsize != 8 || bp.ndim != 1 || idx < 0 || j < 0 || k < 0 ||
        idx + k > bt.len / 8 || j + k > bp.len / 8) {
        PyBuffer_Release(&bp);
        PyBuffer_Release(&bt);
        PyErr_SetString(PyExc_ValueError, "pte_fill: range outside the arrays");
        return NULL;
    }
    uint64_t *t = (uint64_t *)bt.buf + idx;
    const uint64_t *p = (const uint64_t *)bp.buf + j;
    Py_ssize_t busy = -1;
    for (Py_ssize_t i = 0; i < k; i++)
        if (t[i]) { busy = i; break; }
    Py_ssize_t w = busy < 0 ? k : busy;
    for (Py_ssize_t i = 0; i < w; i++) t[i] = (p[i] << 12) | (uint64_t)prot;
    PyBuffer_Release(&bp);
    PyBuffer_Release(&bt);
    return PyLong_FromSsize_t(busy);
}

/* --- the trace parser's fast path ------------------------------------------------------ */
static PyTypeObject *ev_alloc_t = NULL, *ev_free_t = NULL, *ev_purge_t = NULL;
/* header slots (task pid cpu flags timestamp line) then the event's own fields */
static Py_ssize_t off_hdr[3][6], off_alloc[6], off_free[3], off_purge[3];

static int any_member_offset(PyTypeObject *t, const char *name, Py_ssize_t *out) {
    PyObject *d = PyObject_GetAttrString((PyObject *)t, name); /* follows the MRO */
    if (d == NULL) return -1;
    int ok = Py_TYPE(d) == &PyMemberDescr_Type &&
             ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
    if (ok) *out = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%.100s.%s is not an object slot", t->tp_name, name);
        return -1;
    }
    return 0;
}

static const char *hdr_names[6] = {"task", "pid", "cpu", "flags", "timestamp", "line"};

static PyObject *vm_init_trace_events(PyObject *self, PyObject *args) {
    PyObject *a, *f, *p;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyType_Type, &a, &PyType_Type, &f, &PyType_Type, &p))
        return NULL;
    PyTypeObject *ts[3] = {(PyTypeObject *)a, (PyTypeObject *)f, (PyTypeObject *)p};
    static const char *an[6] = {"addr", "size", "align", "vstart", "vend", "failed"};
    static const char *fn[3] = {"va_start", "nr_lazy", "nr_lazy_max"};
    static const char *pn[3] = {"start", "end", "npurged"};
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < 6; i++)
            if (any_member_offset(ts[t], hdr_names[i], &off_hdr[t][i]) < 0) return NULL;
    for (int i = 0; i < 6; i++)
        if (any_member_offset(ts[0], an[i], &off_alloc[i]) < 0) return NULL;
    for (int i = 0; i < 3; i++)
        if (any_member_offset(ts[1], fn[i], &off_free[i]) < 0 ||
            any_member_offset(ts[2], pn[i], &off_purge[i]) < 0)
            return NULL;
    Py_INCREF(a); Py_INCREF(f); Py_INCREF(p);
    Py_XSETREF(ev_alloc_t, ts[0]);
    Py_XSETREF(ev_free_t, ts[1]);
    Py_XSETREF(ev_purge_t, ts[2]);
    Py_RETURN_NONE;
}

typedef struct {
    const char *s;
    Py_ssize_t i, n;
} cur_t;

#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
/* \s in the regex's ASCII mode */
#define IS_WS(c) ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r' || (c) == '\f' || (c) == '\v')

/* [0-9]{1,maxd}: the value (must fit 64 bits) */
static inline int dec(cur_t *c, int maxd, uint64_t *out) {
    u128 v = 0;
    int d = 0;
    while (c->i < c->n && IS_DIGIT(c->s[c->i])) {
        if (++d > maxd) return -1;
        v = v * 10 + (unsigned)(c->s[c->i++] - '0');
    }
    if (d == 0 || v > UINT64_MAX) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* [0-9a-f]{1,16} */
static inline int hex(cur_t *c, uint64_t *out) {
    uint64_t v = 0;
    int d = 0;
    while (c->i < c->n) {
        char ch = c->s[c->i];
        unsigned x;
        if (IS_DIGIT(ch)) x = (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f') x = (unsigned)(ch - 'a' + 10);
        else break;
        if (++d > 16) return -1;
        v = (v << 4) | x;
        c->i++;
    }
    if (d == 0) return -1;
    *out = v;
    return 0;
}

static inline int lit(cur_t *c, const char *w, Py_ssize_t len) {
    if (c->i + len > c->n || memcmp(c->s + c->i, w, (size_t)len) != 0) return -1;
    c->i += len;
    return 0;
}
#define LIT(c, w) lit((c), (w), (Py_ssize_t)(sizeof(w) - 1))

static inline int spaces(cur_t *c) { /* ' ++' */
    if (c->i >= c->n || c->s[c->i] != ' ') return -1;
    while (c->i < c->n && c->s[c->i] == ' ') c->i++;
    return 0;
}

static inline PyObject *u64obj(uint64_t v) { return PyLong_FromUnsignedLongLong(v); }

/* parse_tracefs(text, pos, lineno, cpus, out, tasks) -> (pos, lineno)
 * The fast regex of parse.py (_FAST_RE) for lines in the exact tracefs layout whose
 * values pass the parser's checks without a message: each such line becomes its event,
 * appended to out, with the reference's values. The first line that is anything else
 * (another layout, a comment, a value a check would refuse or a failed allocation, a
 * number past 64 bits) stops the scan untouched: parse.py handles it with the reference
 * code and calls back. text must be an ASCII str. */
static PyObject *vm_parse_tracefs(PyObject *self, PyObject *args) {
    PyObject *text, *out, *tasks;
    Py_ssize_t pos, lineno, cpus;
    if (!PyArg_ParseTuple(args, "UnnnO!O!", &text, &pos, &lineno, &cpus, &PyList_Type, &out,
                          &PyDict_Type, &tasks))
        return NULL;
    if (ev_alloc_t == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.init_trace_events() was not called");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(text)) return Py_BuildValue("nn", pos, lineno);
    const char *s = (const char *)PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    PyObject *last_vs = NULL, *last_ve = NULL; /* vstart/vend repeat on every line */
    uint64_t last_vs_v = 0, last_ve_v = 0;
    while (pos < n) {
        cur_t c = {s, pos, n};
        /* (.{16})- */
        if (pos + 17 > n) break;
        if (memchr(s + pos, '\n', 16) != NULL || s[pos + 16] != '-') break;
        c.i = pos + 17;
        uint64_t pid, cpu;
        if (dec(&c, 10, &pid) < 0 || pid > 4 * 1024 * 1024 || spaces(&c) < 0) break;
        if (LIT(&c, "[") < 0 || dec(&c, 10, &cpu) < 0 || cpu >= (uint64_t)cpus ||
            LIT(&c, "] ") < 0)
            break;
        /* ([^ 0-9]\S*+) ++ */
        Py_ssize_t f0 = c.i;
        if (c.i >= n || IS_WS(s[c.i]) || IS_DIGIT(s[c.i])) break;
        while (c.i < n && !IS_WS(s[c.i])) c.i++;
        Py_ssize_t f1 = c.i;
        if (spaces(&c) < 0) break;
        /* ([0-9]{1,20}\.[0-9]{1,12}): */
        Py_ssize_t t0 = c.i;
        int d = 0;
        while (c.i < n && IS_DIGIT(s[c.i])) { c.i++; d++; }
        if (d < 1 || d > 20 || c.i >= n || s[c.i] != '.') break;
        c.i++;
        d = 0;
        while (c.i < n && IS_DIGIT(s[c.i])) { c.i++; d++; }
        if (d < 1 || d > 12) break;
        Py_ssize_t t1 = c.i;
        if (LIT(&c, ": ") < 0) break;
        int kind;
        uint64_t v[6] = {0, 0, 0, 0, 0, 0};
        int64_t failed = 0;
        if (LIT(&c, "alloc_vmap_area: va_start: ") == 0) {
            kind = 0;
            if (dec(&c, 20, &v[0]) < 0 || LIT(&c, " size=") < 0 || dec(&c, 20, &v[1]) < 0 ||
                LIT(&c, " align=") < 0 || dec(&c, 20, &v[2]) < 0 || LIT(&c, " vstart=0x") < 0 ||
                hex(&c, &v[3]) < 0 || LIT(&c, " vend=0x") < 0 || hex(&c, &v[4]) < 0 ||
                LIT(&c, " failed=") < 0)
                break;
            /* -?[0-9]{1,10}: only 0 takes this path (a failure gets the reference) */
            uint64_t fv;
            if (dec(&c, 10, &fv) < 0 || fv != 0) break;
            failed = 0;
            uint64_t addr = v[0], size = v[1], align = v[2];
            /* _check_size, _check_align, then the inline success test of _parse_chunk */
            if (size == 0 || size % 4096 || align == 0 || (align & (align - 1))) break;
            if (!(addr > 0 && v[3] <= addr && (u128)addr + size <= v[4] && !(addr & (align - 1)) &&
                  !(addr & 0xFFF)))
                break;
        } else if (LIT(&c, "free_vmap_area_noflush: va_start=0x") == 0) {
            kind = 1;
            if (hex(&c, &v[0]) < 0 || LIT(&c, " nr_lazy=") < 0 || dec(&c, 20, &v[1]) < 0 ||
                LIT(&c, " nr_lazy_max=") < 0 || dec(&c, 20, &v[2]) < 0)
                break;
            if ((v[0] & 0xFFF) || v[1] == 0) break;
        } else if (LIT(&c, "purge_vmap_area_lazy: start=0x") == 0) {
            kind = 2;
            if (hex(&c, &v[0]) < 0 || LIT(&c, " end=0x") < 0 || hex(&c, &v[1]) < 0 ||
                LIT(&c, " num_purged=") < 0 || dec(&c, 10, &v[2]) < 0)
                break;
            if (!(v[0] < v[1] && !((v[0] | v[1]) & 0xFFF) && v[2] <= UINT32_MAX)) break;
        } else {
            break;
        }
        if (c.i >= n || s[c.i] != '\n') break;
        c.i++;
        /* the line is accepted: build the event */
        PyObject *raw = PyUnicode_FromStringAndSize(s + pos, 16);
        if (raw == NULL) goto error;
        PyObject *task = PyDict_GetItemWithError(tasks, raw); /* borrowed */
        if (task == NULL) {
            if (PyErr_Occurred()) { Py_DECREF(raw); goto error; }
            Py_ssize_t b = 0;
            while (b < 16 && s[pos + b] == ' ') b++;
            task = PyUnicode_FromStringAndSize(s + pos + b, 16 - b);
            if (task == NULL || PyDict_SetItem(tasks, raw, task) < 0) {
                Py_XDECREF(task);
                Py_DECREF(raw);
                goto error;
            }
            Py_DECREF(task); /* the dict holds it */
        }
        Py_DECREF(raw);
        char tsbuf[40];
        memcpy(tsbuf, s + t0, (size_t)(t1 - t0));
        tsbuf[t1 - t0] = 0;
        double ts = PyOS_string_to_double(tsbuf, NULL, NULL);
        if (ts == -1.0 && PyErr_Occurred()) goto error;
        PyTypeObject *tp = kind == 0 ? ev_alloc_t : kind == 1 ? ev_free_t : ev_purge_t;
        PyObject *e = tp->tp_alloc(tp, 0);
        if (e == NULL) goto error;
        lineno++;
        Py_ssize_t *oh = off_hdr[kind];
        Py_INCREF(task);
        SLOT(e, oh[0]) = task;
        SLOT(e, oh[1]) = u64obj(pid);
        SLOT(e, oh[2]) = u64obj(cpu);
        SLOT(e, oh[3]) = PyUnicode_FromStringAndSize(s + f0, f1 - f0);
        SLOT(e, oh[4]) = PyFloat_FromDouble(ts);
        SLOT(e, oh[5]) = PyLong_FromSsize_t(lineno);
        int bad = !SLOT(e, oh[1]) || !SLOT(e, oh[2]) || !SLOT(e, oh[3]) || !SLOT(e, oh[4]) ||
                  !SLOT(e, oh[5]);
        if (kind == 0) {
            if (last_vs == NULL || last_vs_v != v[3]) {
                Py_XDECREF(last_vs);
                last_vs = u64obj(v[3]);
                last_vs_v = v[3];
            }
            if (last_ve == NULL || last_ve_v != v[4]) {
                Py_XDECREF(last_ve);
                last_ve = u64obj(v[4]);
                last_ve_v = v[4];
            }
            SLOT(e, off_alloc[0]) = u64obj(v[0]);
            SLOT(e, off_alloc[1]) = u64obj(v[1]);
            SLOT(e, off_alloc[2]) = u64obj(v[2]);
            Py_XINCREF(last_vs);
            SLOT(e, off_alloc[3]) = last_vs;
            Py_XINCREF(last_ve);
            SLOT(e, off_alloc[4]) = last_ve;
            SLOT(e, off_alloc[5]) = PyLong_FromLongLong(failed);
            for (int i = 0; i < 6; i++) bad |= !SLOT(e, off_alloc[i]);
        } else {
            Py_ssize_t *of = kind == 1 ? off_free : off_purge;
            for (int i = 0; i < 3; i++) {
                SLOT(e, of[i]) = u64obj(v[i]);
                bad |= !SLOT(e, of[i]);
            }
        }
        if (bad || PyList_Append(out, e) < 0) {
            Py_DECREF(e);
            goto error;
        }
        Py_DECREF(e);
        pos = c.i;
    }
    Py_XDECREF(last_vs);
    Py_XDECREF(last_ve);
    return Py_BuildValue("nn", pos, lineno);
error:
    Py_XDECREF(last_vs);
    Py_XDECREF(last_ve);
    return NULL;
}
/* ============================================================ end of speedvm section */

/* =====================================================================================
 * replay batch section (helper replayc)
 *
 * The replay loop for the common events, many per call: TraceHarness.drive over
 * Replayer.before/alloc/free (trace/harness.py, trace/replay.py are the reference).
 *
 * replay_run(replayer, events, i, every) applies events[i], events[i + 1], ... while
 * each is one of
 *   - an alloc_vmap_area the kernel did not fail, whose address the model gives: its own
 *     alloc_vmap_area_once (pool head or lowest match; no guessed node to vote on), or
 *     the guessed head of a pool hidden at snapshot time (Replayer._hidden_guess,
 *     _adopt_at), or the search past a block the kernel's search does not reach
 *     (_search_again, after a first choice at one end of its block);
 *   - a free_vmap_area_noflush of a busy area that starts at that address, in its
 *     address's node, that neither arms the next purge nor shows a purge's node done;
 * outside any timed state of the open purge (armed, decay held, nodes due), and
 * returns the index of the first event that is not (len(events) at the end): the
 * Python handlers take that one. Each event is looked at first and applied only when
 * it is common (the mechanism as the whole operations above commit it, then the handler's
 * bookkeeping: counters, beliefs, drift, the crossing time), so a declined event finds
 * the model exactly as Python left it. Whatever the replay does not set up as usual
 * (another class or a replaced method, observers, a profile without trace-driven
 * purges, the progress bar's tick every `every` events) returns at once.
 *
 * space.explain is off while the batch runs; the last allocation's Decision is built
 * once, on the way out, as alloc_vmap_area_once would have left it. The mechanism's
 * counters are kept in C and written before any Python code runs and on the way out.
 *
 * Also here: twins for the Python handlers of the guess (hidden_guess) and of
 * Replayer._adopt (replay_adopt), seed_busy (TraceHarness.seed_busy's usual case: claim +
 * busy insert) and
 * twins of trace/beliefs.py's walks over every pooled area (pool_ranges,
 * insert_by_purge_order).
 * ===================================================================================== */

enum {
    RB_RESULT, RB_BELIEFS, RB_SPACE, RB_HARNESS, RB_CPUS, RB_TRACE_DRIVEN, RB_EARLY, RB_SEED,
    RB_INFER, RB_REORDERED, RB_PURGE_INDEX, RB_INDEX, RB_ARMED, RB_HELD_UNTIL, RB_PENDING,
    RB_NODE_DONE, RB_DRIFT, RB_CROSSED, RB_LAST_FAILED, RB_NEXT_PURGE, RB_PROFILE,
    RB_EVENTS, RB_COMPARED, RB_MATCHED, RB_GUESSED, RB_FREES, RB_LAZY_DRIFT, RB_FIRST_DRIFT,
    RB_HIDDEN_HEAD, RB_UNKNOWN, RB_UNREACH, RB_HIGH, RB_OLD, RB_REFUTED, RB_RECYCLED,
    RB_MARKED, RB_KSTATE, RB_THRESHOLD, RB_MAXVA, RB_FREE_METH, RB_CPU_KW,
    RB_ID, RB_VA_START, RB_VA_END, RB_APPEND,
    RB_HELD, RB_HPREV, RB_HPREV2, RB_HREFUTED, RB_PARKED, RB_PSTARTS, RB_HIDDEN_HITS,
    RB_ADOPT_AREA, RB_NOTES, RB_MERGE, RB_SEARCHES, RB_PURGE_AT, RB_EVENTS_ATTR, RB_NXT, RB_VOTES,
    RB_N
};
static const char *rb_names[RB_N] = {
    "result", "beliefs", "space", "harness", "cpus", "trace_driven", "early_decay", "seed",
    "_infer_pools", "_reordered", "_purge_index", "_index", "_armed_at", "_held_until",
    "_pending", "_node_done_at", "_drift_run", "_crossed_at", "_last_alloc_failed",
    "_next_purge", "profile",
    "events", "allocs_compared", "allocs_matched", "allocs_matched_guessed", "frees",
    "lazy_drift", "first_lazy_drift_line",
    "hidden_head", "unknown_node", "unreachable", "kernel_tree_high", "old_blocks",
    "refuted_nodes", "recycled",
    "marked", "kstate", "_lazy_threshold_passed", "max_va_size_pages",
    "free_vmap_area_noflush", "cpu",
    "id", "va_start", "va_end", "append",
    "_held", "hidden_prev", "hidden_prev2", "hidden_refuted", "parked", "_parked_starts",
    "hidden_pool_hits",
    "adopt_area", "notes", "merge_or_add_vmap_area_augment", "searches_skipping_unreachable",
    "_purge_at", "_events", "_nxt", "node_votes",
};
static PyObject *rb_s[RB_N];

static int rb_strings(void) {
    for (int i = 0; i < RB_N; i++)
        if (rb_s[i] == NULL && !(rb_s[i] = PyUnicode_InternFromString(rb_names[i]))) return -1;
    return 0;
}

/* The classes the batch mirrors: Replayer, TraceHarness, VmapSpace, Beliefs (each with
 * its mirrored methods, checked unreplaced on every call), ReplayResult, PendingPurge. */
enum { RB_T_RP, RB_T_HARNESS, RB_T_SPACE, RB_T_BELIEFS, RB_T_RESULT, RB_T_PENDING, RB_T_N };
static PyTypeObject *rb_types[RB_T_N];
/* per role (the first four): a tuple of (name, function as the class had it at init) */
static PyObject *rb_guards[4];
static long rb_drift_limit = 8; /* DRIFT_RUN */
/* trace/beliefs.py HIDDEN_SCAN_BLOCKS, EXACT_SCAN_BLOCKS (set by replay_run_init) */
static long HIDDEN_SCAN = 64, EXACT_SCAN = 16, MAX_CLASS = 256;
static PyObject *rb_fguards = NULL; /* ((namespace, name, function), ...) */
static PyObject *rb_fl_kwnames = NULL; /* ("cpu",) */

/* replay_run_init(Replayer, TraceHarness, VmapSpace, Beliefs, ReplayResult, PendingPurge,
 * guards, DRIFT_RUN[, HIDDEN_SCAN_BLOCKS, EXACT_SCAN_BLOCKS, functions, MAX_CLASS]): guards is four
 * tuples of method names, one per class; functions a tuple of (namespace dict, name)
 * pairs: the module functions the batch mirrors, checked unreplaced on every call. */
static PyObject *rb_init(PyObject *self, PyObject *args) {
    PyObject *t[RB_T_N], *guards, *funcs = NULL;
    long drift, hscan = 64, escan = 16, maxcls = 256;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!O!l|llO!l", &PyType_Type, &t[0], &PyType_Type,
                          &t[1], &PyType_Type, &t[2], &PyType_Type, &t[3], &PyType_Type, &t[4],
                          &PyType_Type, &t[5], &PyTuple_Type, &guards, &drift, &hscan, &escan,
                          &PyTuple_Type, &funcs, &maxcls))
        return NULL;
    if (PyTuple_GET_SIZE(guards) != 4 || drift < 1 || hscan < 0 || escan < 0 || maxcls < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "replay_run_init: four guard tuples, DRIFT_RUN >= 1, scans >= 0");
        return NULL;
    }
    /* the functions as the namespaces hold them now: (dict, name, function) */
    PyObject *fg = PyTuple_New(funcs ? PyTuple_GET_SIZE(funcs) : 0);
    if (!fg) return NULL;
    for (Py_ssize_t j = 0; funcs && j < PyTuple_GET_SIZE(funcs); j++) {
        PyObject *pr = PyTuple_GET_ITEM(funcs, j), *fn;
        if (!PyTuple_Check(pr) || PyTuple_GET_SIZE(pr) != 2 ||
            !PyDict_Check(PyTuple_GET_ITEM(pr, 0)) ||
            !(fn = PyDict_GetItemWithError(PyTuple_GET_ITEM(pr, 0), PyTuple_GET_ITEM(pr, 1)))) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError,
                                "replay_run_init: functions are (namespace, name) pairs");
            Py_DECREF(fg);
            return NULL;
        }
        PyObject *tr = PyTuple_Pack(3, PyTuple_GET_ITEM(pr, 0), PyTuple_GET_ITEM(pr, 1), fn);
        if (!tr) {
            Py_DECREF(fg);
            return NULL;
        }
        PyTuple_SET_ITEM(fg, j, tr);
    }
    Py_XSETREF(rb_fguards, fg);
    HIDDEN_SCAN = hscan;
    EXACT_SCAN = escan;
    MAX_CLASS = maxcls;
    if (rb_strings() < 0) return NULL;
    PyObject *g[4] = {NULL, NULL, NULL, NULL};
    for (int r = 0; r < 4; r++) {
        PyObject *names = PyTuple_GET_ITEM(guards, r);
        if (!PyTuple_Check(names)) {
            PyErr_SetString(PyExc_TypeError, "replay_run_init: guards must be tuples of names");
            goto fail;
        }
        Py_ssize_t k = PyTuple_GET_SIZE(names);
        g[r] = PyTuple_New(k);
        if (!g[r]) goto fail;
        for (Py_ssize_t j = 0; j < k; j++) {
            PyObject *name = PyTuple_GET_ITEM(names, j);
            if (!PyUnicode_CheckExact(name)) {
                PyErr_SetString(PyExc_TypeError, "replay_run_init: a method name is not a str");
                goto fail;
            }
            Py_INCREF(name);
            PyUnicode_InternInPlace(&name);
            PyObject *fn = _PyType_Lookup((PyTypeObject *)t[r], name);
            if (fn == NULL) {
                PyErr_Format(PyExc_AttributeError, "%.100s has no %U", ((PyTypeObject *)t[r])->tp_name,
                             name);
                Py_DECREF(name);
                goto fail;
            }
            PyObject *pair = PyTuple_Pack(2, name, fn);
            Py_DECREF(name);
            if (!pair) goto fail;
            PyTuple_SET_ITEM(g[r], j, pair);
        }
    }
    if (rb_fl_kwnames == NULL && !(rb_fl_kwnames = PyTuple_Pack(1, rb_s[RB_CPU_KW]))) goto fail;
    for (int i = 0; i < RB_T_N; i++) {
        Py_INCREF(t[i]);
        Py_XSETREF(rb_types[i], (PyTypeObject *)t[i]);
    }
    for (int r = 0; r < 4; r++) Py_XSETREF(rb_guards[r], g[r]);
    rb_drift_limit = drift;
    Py_RETURN_NONE;
fail:
    for (int r = 0; r < 4; r++) Py_XDECREF(g[r]);
    return NULL;
}

/* 1 when obj is exactly the class of role r and none of its mirrored methods is
 * replaced (on the class or the instance); 0 otherwise. d is obj's instance dict. */
static int rb_unreplaced(PyObject *obj, PyObject *d, int r) {
    PyObject *g = rb_guards[r];
    if (g == NULL || Py_TYPE(obj) != rb_types[r]) return 0;
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(g); j++) {
        PyObject *pair = PyTuple_GET_ITEM(g, j), *name = PyTuple_GET_ITEM(pair, 0);
        if (_PyType_Lookup(rb_types[r], name) != PyTuple_GET_ITEM(pair, 1)) return 0;
        if (PyDict_GetItemWithError(d, name) != NULL || PyErr_Occurred()) return 0;
    }
    return 1;
}

/* The instance dict of obj (a new reference), or NULL (no error set) if it has none. */
static PyObject *rb_dict(PyObject *obj) {
    PyObject **dp = _PyObject_GetDictPtr(obj);
    if (dp == NULL || *dp == NULL || !PyDict_CheckExact(*dp)) return NULL;
    Py_INCREF(*dp);
    return *dp;
}

/* d[key] as a C long when it is an exact int that fits: 1, else 0. */
static int rb_long(PyObject *d, int key, long *out) {
    PyObject *v = PyDict_GetItemWithError(d, rb_s[key]);
    if (v == NULL || !PyLong_CheckExact(v)) return 0;
    int of = 0;
    long x = PyLong_AsLongAndOverflow(v, &of);
    if (of || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = x;
    return 1;
}

/* d[key] as a new reference that must be exactly of type t (NULL: not). */
static PyObject *rb_get(PyObject *d, int key, PyTypeObject *t) {
    PyObject *v = PyDict_GetItemWithError(d, rb_s[key]);
    if (v == NULL || Py_TYPE(v) != t) return NULL;
    Py_INCREF(v);
    return v;
}

/* An exact float slot (timestamps): 1 and *out, else 0. */
static inline int rb_float(PyObject *o, double *out) {
    if (o == NULL || !PyFloat_CheckExact(o)) return 0;
    *out = PyFloat_AS_DOUBLE(o);
    return 1;
}

typedef struct {
    PyObject *rp, *space, *harness; /* borrowed (the caller's arguments / held by rp_d) */
    PyObject *rp_d, *res_d, *b_d, *h_d, *space_d, *events; /* new references */
    PyObject *reordered, *hidden_head, *unknown, *unreach, *high, *old, *refuted,
        *recycled; /* new references */
    PyObject *held, *hprev, *hprev2, *hrefuted, *parked, *pstarts; /* new references */
    PyObject *node_votes; /* new reference (NULL: not a dict, no vote in C) */
    ctx_t c;
    int have_c;
    long cpus, purge_index, drift_run;
    uint64_t max_va, npurged;
    int infer, early, kstate_seed, has_next, pending_none, marked, explain_was;
    int armed_set, held_set, done_set;
    double armed, held_min, done0;
    PyObject *fits; /* stats.fits (borrowed: stats keeps it) */
    int node_pools;
    /* what the batch changed, written back on the way out (and before any Python call) */
    long n_events, compared, matched, guessed, frees, lazy_drift, index, hidden_hits, searches;
    long d_busy, d_free, d_allocs, d_visits, d_pool_hits, d_lazy_frees;
    int any_alloc, lph; /* lph: last_pool_hit to write (-1: unchanged) */
    /* the last allocation's Decision (alloc_vmap_area_once's, with explain on) */
    int dec_pool_hit, dec_rotated, dec_fit;
    long dec_node, dec_pidx;
    uint64_t dec_bs, dec_be, dec_len;
} rb_t;

static void rb_release(rb_t *b) {
    Py_CLEAR(b->rp_d); Py_CLEAR(b->res_d); Py_CLEAR(b->b_d); Py_CLEAR(b->h_d);
    Py_CLEAR(b->space_d); Py_CLEAR(b->events);
    Py_CLEAR(b->reordered); Py_CLEAR(b->hidden_head); Py_CLEAR(b->unknown);
    Py_CLEAR(b->unreach); Py_CLEAR(b->high); Py_CLEAR(b->old); Py_CLEAR(b->refuted);
    Py_CLEAR(b->recycled);
    Py_CLEAR(b->held); Py_CLEAR(b->hprev); Py_CLEAR(b->hprev2); Py_CLEAR(b->hrefuted);
    Py_CLEAR(b->parked); Py_CLEAR(b->pstarts); Py_CLEAR(b->node_votes);
    if (b->have_c) ctx_release(&b->c);
    b->have_c = 0;
}

/* Gather what the batch reads from the replayer: 1 (b filled), 0 (not a replay the
 * batch mirrors: nothing to do), -1 (error). */
static int rb_setup(rb_t *b, PyObject *rp) {
    memset(b, 0, sizeof(*b));
    b->rp = rp;
    if (rb_types[0] == NULL || ev_alloc_t == NULL || st_busy == NULL || va_ready() < 0) {
        PyErr_Clear();
        return 0;
    }
    if (!(b->rp_d = rb_dict(rp)) || !rb_unreplaced(rp, b->rp_d, RB_T_RP)) return 0;
    for (Py_ssize_t j = 0; rb_fguards && j < PyTuple_GET_SIZE(rb_fguards); j++) {
        PyObject *tr = PyTuple_GET_ITEM(rb_fguards, j);
        if (PyDict_GetItemWithError(PyTuple_GET_ITEM(tr, 0), PyTuple_GET_ITEM(tr, 1)) !=
            PyTuple_GET_ITEM(tr, 2))
            return 0; /* a replaced function (next_hidden_head, ...) */
    }
    PyObject *d = b->rp_d, *v;
    if (PyDict_GetItemWithError(d, rb_s[RB_TRACE_DRIVEN]) != Py_True) return 0;
    PyObject *res = PyDict_GetItemWithError(d, rb_s[RB_RESULT]);
    PyObject *bel = PyDict_GetItemWithError(d, rb_s[RB_BELIEFS]);
    PyObject *har = PyDict_GetItemWithError(d, rb_s[RB_HARNESS]);
    b->space = PyDict_GetItemWithError(d, rb_s[RB_SPACE]);
    b->harness = har;
    if (!res || !bel || !har || !b->space || Py_TYPE(res) != rb_types[RB_T_RESULT]) return 0;
    if (!(b->res_d = rb_dict(res)) || !(b->b_d = rb_dict(bel)) || !(b->h_d = rb_dict(har)) ||
        !(b->space_d = rb_dict(b->space)))
        return 0;
    if (!rb_unreplaced(bel, b->b_d, RB_T_BELIEFS) || !rb_unreplaced(har, b->h_d, RB_T_HARNESS) ||
        !rb_unreplaced(b->space, b->space_d, RB_T_SPACE))
        return 0;
    if (PyDict_GetItemWithError(b->h_d, rb_s[RB_TRACE_DRIVEN]) != Py_True ||
        PyDict_GetItemWithError(b->h_d, rb_s[RB_SPACE]) != b->space)
        return 0;
    int rc = ctx_get(b->space, &b->c);
    if (rc <= 0) return rc;
    b->have_c = 1;
    /* observers see the model's events one by one: the reference */
    PyObject *tpa = PyDict_GetItemWithError(b->space_d, s_tp_alloc);
    PyObject *tpf = PyDict_GetItemWithError(b->space_d, s_tp_free);
    if (!tpa || !PyList_CheckExact(tpa) || PyList_GET_SIZE(tpa) || !tpf ||
        !PyList_CheckExact(tpf) || PyList_GET_SIZE(tpf))
        return 0;
    v = PyDict_GetItemWithError(b->space_d, s_explain);
    if (v != Py_True && v != Py_False) return 0;
    b->explain_was = v == Py_True;
    b->lph = -1;
    /* the policies, the free tree's explain hook and stats.fits, as alloc_vmap_area_once
     * checks them (the kernel's own policies only) */
    PyObject *pools_pol = PyDict_GetItemWithError(b->space_d, s_pools);
    PyObject *placement = PyDict_GetItemWithError(b->space_d, s_placement);
    if (!pools_pol || !placement || Py_TYPE(placement) != lowest_match_type ||
        (Py_TYPE(pools_pol) != node_pools_type && Py_TYPE(pools_pol) != no_pools_type))
        return 0;
    b->node_pools = Py_TYPE(pools_pol) == node_pools_type;
    b->fits = PyDict_GetItemWithError(b->c.stats_d, s_fits);
    if (PyDict_GetItemWithError(b->c.free_d, s_why) != Py_None || !b->fits ||
        !PyList_CheckExact(b->fits) || PyList_GET_SIZE(b->fits) < 5 ||
        !d_int(b->space_d, s_nr_busy) || !d_int(b->c.free_d, s_nr_free) ||
        !d_int(b->c.stats_d, s_allocs) || !d_int(b->c.stats_d, s_search_visits) ||
        !d_int(b->c.stats_d, s_pool_hits) || !d_int(b->c.stats_d, s_lazy_frees))
        return 0;
    if (!rb_long(d, RB_CPUS, &b->cpus) || b->cpus <= 0 ||
        !rb_long(d, RB_PURGE_INDEX, &b->purge_index) || !rb_long(d, RB_DRIFT, &b->drift_run))
        return 0;
    v = PyDict_GetItemWithError(d, rb_s[RB_INFER]);
    if (v != Py_True && v != Py_False) return 0;
    b->infer = v == Py_True;
    v = PyDict_GetItemWithError(d, rb_s[RB_EARLY]);
    if (v != Py_True && v != Py_False) return 0;
    b->early = v == Py_True;
    v = PyDict_GetItemWithError(d, rb_s[RB_SEED]);
    if (!v || !PyUnicode_CheckExact(v)) return 0;
    b->kstate_seed = PyUnicode_Compare(v, rb_s[RB_KSTATE]) == 0;
    if (!(b->reordered = rb_get(d, RB_REORDERED, &PySet_Type))) return 0;
    /* the open purge's timed state: an event at or past one of its times goes to Python */
    v = PyDict_GetItemWithError(d, rb_s[RB_ARMED]);
    if (v == NULL) return 0;
    if (v != Py_None) {
        if (!rb_float(v, &b->armed)) return 0;
        b->armed_set = 1;
    }
    v = PyDict_GetItemWithError(d, rb_s[RB_HELD_UNTIL]);
    if (!v || !PyList_CheckExact(v)) return 0;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(v); k++) {
        PyObject *it = PyList_GET_ITEM(v, k);
        double t;
        if (!PyTuple_CheckExact(it) || PyTuple_GET_SIZE(it) < 1 ||
            !rb_float(PyTuple_GET_ITEM(it, 0), &t))
            return 0;
        if (!b->held_set || t < b->held_min) b->held_min = t;
        b->held_set = 1;
    }
    PyObject *pending = PyDict_GetItemWithError(d, rb_s[RB_PENDING]);
    if (pending == NULL) return 0;
    b->pending_none = pending == Py_None;
    if (!b->pending_none) {
        if (Py_TYPE(pending) != rb_types[RB_T_PENDING]) return 0;
        PyObject *pd = rb_dict(pending);
        if (!pd) return 0;
        PyObject *m = PyDict_GetItemWithError(pd, rb_s[RB_MARKED]);
        int ok = m != NULL && PyList_CheckExact(m);
        if (ok) b->marked = PyList_GET_SIZE(m) > 0;
        Py_DECREF(pd);
        if (!ok) return 0;
        v = PyDict_GetItemWithError(d, rb_s[RB_NODE_DONE]);
        if (!v || !PyList_CheckExact(v)) return 0;
        if (PyList_GET_SIZE(v)) {
            if (!rb_float(PyList_GET_ITEM(v, 0), &b->done0)) return 0;
            b->done_set = 1;
        }
    }
    v = PyDict_GetItemWithError(d, rb_s[RB_NEXT_PURGE]);
    if (v == NULL) return 0;
    if (v != Py_None) {
        if (Py_TYPE(v) != ev_purge_t || !u64_of(SLOT(v, off_purge[2]), &b->npurged)) return 0;
        b->has_next = 1;
    }
    v = PyDict_GetItemWithError(d, rb_s[RB_PROFILE]);
    if (v == NULL) return 0;
    PyObject *m = PyObject_GetAttr(v, rb_s[RB_MAXVA]);
    if (!m) return 0;
    rc = u64_of(m, &b->max_va);
    Py_DECREF(m);
    if (!rc) return 0;
    /* the beliefs the handlers consult */
    if (!(b->hidden_head = rb_get(b->b_d, RB_HIDDEN_HEAD, &PyDict_Type)) ||
        !(b->unknown = rb_get(b->b_d, RB_UNKNOWN, &PyDict_Type)) ||
        !(b->unreach = rb_get(b->b_d, RB_UNREACH, &PyDict_Type)) ||
        !(b->high = rb_get(b->b_d, RB_HIGH, &PyDict_Type)) ||
        !(b->old = rb_get(b->b_d, RB_OLD, &PySet_Type)) ||
        !(b->refuted = rb_get(b->b_d, RB_REFUTED, &PyDict_Type)) ||
        !(b->recycled = rb_get(b->b_d, RB_RECYCLED, &PyDict_Type)) ||
        !(b->hprev = rb_get(b->b_d, RB_HPREV, &PyDict_Type)) ||
        !(b->hprev2 = rb_get(b->b_d, RB_HPREV2, &PyDict_Type)) ||
        !(b->hrefuted = rb_get(b->b_d, RB_HREFUTED, &PyDict_Type)) ||
        !(b->parked = rb_get(b->b_d, RB_PARKED, &PyDict_Type)) ||
        !(b->pstarts = rb_get(b->b_d, RB_PSTARTS, &PyList_Type)) ||
        !(b->held = rb_get(d, RB_HELD, &PyList_Type)))
        return 0;
    b->node_votes = rb_get(b->b_d, RB_VOTES, &PyDict_Type);
    /* the counters the batch adds to must be ints */
    long x;
    static const int counters[] = {RB_EVENTS, RB_COMPARED, RB_MATCHED, RB_GUESSED, RB_FREES,
                                   RB_LAZY_DRIFT, RB_HIDDEN_HITS, RB_SEARCHES};
    for (size_t k = 0; k < sizeof(counters) / sizeof(counters[0]); k++)
        if (!rb_long(b->res_d, counters[k], &x)) return 0;
    if (!PyDict_GetItemWithError(b->res_d, rb_s[RB_FIRST_DRIFT]) ||
        !PyDict_GetItemWithError(d, rb_s[RB_CROSSED]))
        return 0;
    return PyErr_Occurred() ? -1 : 1;
}

/* Write the mechanism's counters the batch keeps in C (before any Python code runs,
 * and on the way out). */
static int rb_counters(rb_t *b) {
    ctx_t *c = &b->c;
    const struct { PyObject *d, *key; long *delta; } adds[] = {
        {b->space_d, s_nr_busy, &b->d_busy}, {c->free_d, s_nr_free, &b->d_free},
        {c->stats_d, s_allocs, &b->d_allocs}, {c->stats_d, s_search_visits, &b->d_visits},
        {c->stats_d, s_pool_hits, &b->d_pool_hits}, {c->stats_d, s_lazy_frees, &b->d_lazy_frees}};
    for (size_t k = 0; k < sizeof(adds) / sizeof(adds[0]); k++) {
        if (*adds[k].delta && d_add(adds[k].d, adds[k].key, *adds[k].delta) < 0) return -1;
        *adds[k].delta = 0;
    }
    if (b->lph >= 0 &&
        PyDict_SetItem(b->space_d, s_last_pool_hit, b->lph ? Py_True : Py_False) < 0)
        return -1;
    b->lph = -1;
    return 0;
}

/* Build the Decision alloc_vmap_area_once leaves with explain on (see its end). */
static int rb_decision(rb_t *b) {
    PyObject *da[8];
    int hit = b->dec_pool_hit;
    da[0] = hit ? s_pool_str : s_tree_str;
    Py_INCREF(da[0]);
    da[1] = PyLong_FromLong(b->dec_node);
    da[2] = PyLong_FromLong(b->dec_pidx);
    da[3] = b->dec_rotated ? Py_True : Py_False;
    Py_INCREF(da[3]);
    da[4] = hit ? Py_BuildValue("(ii)", 0, 0) : Py_BuildValue("(KK)", b->dec_bs, b->dec_be);
    da[5] = PyLong_FromLong(hit ? 0 : b->dec_fit);
    da[6] = PyLong_FromUnsignedLongLong(hit ? 0 : b->dec_len);
    da[7] = small_zero;
    Py_INCREF(da[7]);
    PyObject *dec = NULL;
    if (da[1] && da[2] && da[4] && da[5] && da[6])
        dec = PyObject_Vectorcall((PyObject *)decision_type, da, 8, NULL);
    for (int k = 0; k < 8; k++) Py_XDECREF(da[k]);
    if (!dec) return -1;
    int rc = PyDict_SetItem(b->space_d, s_last_decision, dec);
    Py_DECREF(dec);
    return rc;
}

/* Write back what the batch changed: the counters, the loop's index, explain. */
static int rb_finish(rb_t *b) {
    int err = 0;
    PyObject *exc_t, *exc_v, *exc_tb;
    PyErr_Fetch(&exc_t, &exc_v, &exc_tb); /* an error of the batch is kept, reported after */
    if (b->explain_was && PyDict_SetItem(b->space_d, s_explain, Py_True) < 0) err = 1;
    if (b->have_c && rb_counters(b) < 0) err = 1;
    if (!b->n_events) goto done;
    if (b->any_alloc && b->explain_was && rb_decision(b) < 0) err = 1;
    const struct { int key; long delta; } adds[] = {
        {RB_EVENTS, b->n_events}, {RB_COMPARED, b->compared}, {RB_MATCHED, b->matched},
        {RB_GUESSED, b->guessed}, {RB_FREES, b->frees}, {RB_LAZY_DRIFT, b->lazy_drift},
        {RB_HIDDEN_HITS, b->hidden_hits}, {RB_SEARCHES, b->searches}};
    for (size_t k = 0; k < sizeof(adds) / sizeof(adds[0]); k++)
        if (adds[k].delta && d_add(b->res_d, rb_s[adds[k].key], adds[k].delta) < 0) err = 1;
    PyObject *ix = PyLong_FromLong(b->index), *dr = PyLong_FromLong(b->drift_run);
    if (!ix || !dr || PyDict_SetItem(b->rp_d, rb_s[RB_INDEX], ix) < 0 ||
        PyDict_SetItem(b->rp_d, rb_s[RB_DRIFT], dr) < 0)
        err = 1;
    Py_XDECREF(ix);
    Py_XDECREF(dr);
    if (b->any_alloc && PyDict_SetItem(b->rp_d, rb_s[RB_LAST_FAILED], Py_False) < 0) err = 1;
done:
    if (exc_t != NULL) {
        if (err) PyErr_Clear();
        PyErr_Restore(exc_t, exc_v, exc_tb);
        return -1;
    }
    return err ? -1 : 0;
}

/* Beliefs.forget(start): the range at start was allocated again. */
static int rb_forget(rb_t *b, PyObject *start) {
    PyObject *ds[3] = {b->unknown, b->refuted, b->recycled};
    for (int k = 0; k < 3; k++) {
        if (PyDict_GET_SIZE(ds[k]) == 0) continue;
        PyObject *v = PyDict_GetItemWithError(ds[k], start);
        if (v != NULL) {
            if (PyDict_DelItem(ds[k], start) < 0) return -1;
        } else if (PyErr_Occurred())
            return -1;
    }
    return 0;
}

/* Beliefs.is_unreachable((s, e), length): 1, 0, or -1 (error); 2: a value the batch does
 * not compare (the reference decides). */
static int rb_unreachable(rb_t *b, uint64_t s, uint64_t e, uint64_t length) {
    PyObject *key = Py_BuildValue("(KK)", s, e), *len_o = PyLong_FromUnsignedLongLong(length);
    int res = -1;
    if (!key || !len_o) goto out;
    PyObject *lens = PyDict_GetItemWithError(b->unreach, key);
    if (lens != NULL) {
        if (!PySet_CheckExact(lens)) { res = 2; goto out; }
        int in = PySet_Contains(lens, len_o);
        if (in != 0) { res = in; goto out; }
    } else if (PyErr_Occurred())
        goto out;
    /* passed_over(s, e, length) */
    PyObject *high = PyDict_GetItemWithError(b->high, len_o);
    uint64_t h;
    if (high == NULL) {
        res = PyErr_Occurred() ? -1 : 0;
        goto out;
    }
    if (!u64_of(high, &h)) { res = 2; goto out; }
    if (!(s < h && e - s < length)) { res = 0; goto out; }
    res = PySet_Contains(b->old, key);
out:
    Py_XDECREF(key);
    Py_XDECREF(len_o);
    return res;
}

/* --- the pools hidden at snapshot time (Replayer._hidden_guess, _adopt_at) ----------- */

/* FreeTree.pvm_find_va_enclose_addr(addr): the free block with the highest start at or
 * below addr (borrowed), NULL for none; *bad set (NULL returned) for a block the batch
 * does not read (another class, values past 64 bits). */
static PyObject *rb_enclose(PyObject *root, uint64_t addr, int *bad) {
    PyObject *node = get_node(root, off_root), *va = NULL;
    uint64_t s, e;
    while (node != NULL) {
        if (Py_TYPE(node) != va_type || !va_bounds(node, &s, &e)) {
            *bad = 1;
            return NULL;
        }
        if (s <= addr) {
            va = node;
            if (e >= addr) break;
            node = get_node(node, off_right);
        } else
            node = get_node(node, off_left);
    }
    return va;
}

/* rb_prev(blk) in the free tree (borrowed, NULL at the lowest). */
static PyObject *rb_prev_of(PyObject *blk) {
    PyObject *n = get_node(blk, off_left);
    if (n != NULL) {
        PyObject *r;
        while ((r = get_node(n, off_right)) != NULL) n = r;
        return n;
    }
    n = get_node(blk, off_parent);
    while (n != NULL && blk == get_node(n, off_left)) {
        blk = n;
        n = get_node(n, off_parent);
    }
    return n;
}

/* bisect_left (right = 0) or bisect_right (right = 1) of x in the parked starts (a
 * sorted list of ints); -1 for a start the batch does not read. */
static Py_ssize_t rb_bisect(PyObject *starts, uint64_t x, int right) {
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(starts);
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        uint64_t v;
        if (!u64_of(PyList_GET_ITEM(starts, mid), &v)) return -1;
        if (right ? x < v : v < x) {
            if (right) hi = mid;
            else lo = mid + 1;
        } else {
            if (right) lo = mid + 1;
            else hi = mid;
        }
    }
    return lo;
}

/* The parked block at starts[k] and its bounds: 1, 0 (a block the batch does not
 * read), -1 (error). */
static int rb_parked_block(rb_t *b, Py_ssize_t k, uint64_t *s, uint64_t *e) {
    PyObject *va = PyDict_GetItemWithError(b->parked, PyList_GET_ITEM(b->pstarts, k));
    if (va == NULL) return PyErr_Occurred() ? -1 : 0;
    return Py_TYPE(va) == va_type && va_bounds(va, s, e);
}

/* Beliefs.ranges_below(addr) as a walk: the free blocks from the one enclosing addr - 1
 * down, merged with the parked blocks below addr, highest start first. */
typedef struct {
    PyObject *blk; /* borrowed: the next tree block, NULL when none is left */
    Py_ssize_t i;  /* the next parked start's index, -1 when none is left */
} rb_walk_t;

/* 1 (w set up), 0 (a value the batch does not read: the reference) */
static int rb_walk_init(rb_t *b, rb_walk_t *w, uint64_t addr) {
    int bad = 0;
    w->blk = addr ? rb_enclose(b->c.root, addr - 1, &bad) : NULL;
    Py_ssize_t k = rb_bisect(b->pstarts, addr, 0);
    w->i = k - 1;
    return !bad && k >= 0;
}

/* The next range: 1 (*s, *e), 0 (none left), 2 (a value the batch does not read), -1. */
static int rb_walk_next(rb_t *b, rb_walk_t *w, uint64_t *s, uint64_t *e) {
    uint64_t bs = 0, be = 0, ps = 0;
    if (w->blk == NULL && w->i < 0) return 0;
    if (w->blk != NULL && (Py_TYPE(w->blk) != va_type || !va_bounds(w->blk, &bs, &be))) return 2;
    int tree = w->i < 0;
    if (!tree) {
        if (!u64_of(PyList_GET_ITEM(b->pstarts, w->i), &ps)) return 2;
        tree = w->blk != NULL && bs > ps;
    }
    if (tree) {
        *s = bs;
        *e = be;
        w->blk = rb_prev_of(w->blk);
        return 1;
    }
    int rc = rb_parked_block(b, w->i, s, e);
    if (rc <= 0) return rc < 0 ? -1 : 2;
    w->i--;
    return 1;
}

/* addr in the set `refuted` (NULL: empty): 1, 0, -1. */
static int rb_in(PyObject *refuted, uint64_t addr) {
    if (refuted == NULL) return 0;
    PyObject *a = PyLong_FromUnsignedLongLong(addr);
    if (!a) return -1;
    int in = PySet_Contains(refuted, a);
    Py_DECREF(a);
    return in;
}

/* Beliefs.range_is_free(s, e): 1, 0, 2 (the reference decides), -1. */
static int rb_range_is_free(rb_t *b, uint64_t s, uint64_t e) {
    int bad = 0;
    PyObject *blk = rb_enclose(b->c.root, s, &bad);
    uint64_t bs, be;
    if (bad) return 2;
    if (blk != NULL && va_bounds(blk, &bs, &be) && bs <= s && e <= be) return 1;
    if (PyDict_GET_SIZE(b->parked) == 0) return 0;
    Py_ssize_t k = rb_bisect(b->pstarts, s, 1);
    if (k < 0) return 2;
    if (k == 0) return 0;
    int rc = rb_parked_block(b, k - 1, &bs, &be);
    if (rc <= 0) return rc < 0 ? -1 : 2;
    return s < be && e <= be;
}

/* next_hidden_head (align > PAGE_SIZE) or next_hidden_area (trace/beliefs.py) for the
 * pool `key` whose last head the kernel showed is `last`: 1 (*out, the guess), 0 (no
 * guess), 2 (a value the batch does not read: the reference), -1 (error). */
static int rb_hidden_guess(rb_t *b, PyObject *key, uint64_t last, uint64_t size, uint64_t align,
                           uint64_t *out) {
    PyObject *refuted = PyDict_GetItemWithError(b->hrefuted, key);
    if (refuted == NULL && PyErr_Occurred()) return -1;
    if (refuted != NULL && !PyAnySet_CheckExact(refuted)) return 2;
    if (refuted != NULL && PySet_GET_SIZE(refuted) == 0) refuted = NULL;
    uint64_t vs = b->c.vstart, s, e;
    rb_walk_t w;
    int r;
    if (align > 4096) { /* next_hidden_head: the highest unrefuted aligned slot below */
        if (!rb_walk_init(b, &w, last)) return 2;
        for (int n = 0;; n++) {
            if ((r = rb_walk_next(b, &w, &s, &e)) != 1) return r;
            if (n >= HIDDEN_SCAN || s < vs) return 0;
            uint64_t top = e < last ? e : last;
            if (top < size) continue;
            for (uint64_t y = (top - size) & ~(align - 1); y >= s; y -= align) {
                int in = rb_in(refuted, y);
                if (in < 0) return -1;
                if (!in) { /* y + size <= top: y is at most top - size */
                    *out = y;
                    return 1;
                }
                if (y < align) break;
            }
        }
    }
    /* next_hidden_area: one stride further down, then the highest exact-size range */
    PyObject *prev_o = PyDict_GetItemWithError(b->hprev, key), *p2_o;
    if (prev_o == NULL && PyErr_Occurred()) return -1;
    if (prev_o != NULL) {
        uint64_t prev, p2;
        if (!u64_of(prev_o, &prev)) return 2;
        /* _adjacent_hidden_area: after two adjacent heads, the slot right below the last
         * one, when it is free space to the model and not refuted */
        if ((u128)last + size == prev && last >= size && last - size >= vs) {
            uint64_t y = last - size;
            int in = rb_in(refuted, y);
            if (in < 0) return -1;
            if (!in) {
                int fr = rb_range_is_free(b, y, last);
                if (fr != 0) {
                    if (fr == 1) *out = y;
                    return fr;
                }
            }
        }
        if (prev > last) {
            p2_o = PyDict_GetItemWithError(b->hprev2, key);
            if (p2_o == NULL && PyErr_Occurred()) return -1;
            if (p2_o != NULL && !u64_of(p2_o, &p2)) return 2;
            uint64_t d = prev - last;
            if (p2_o != NULL && (u128)prev + d == p2 && d <= last && last - d >= vs) {
                uint64_t y = last - d;
                if ((u128)y + size > UINT64_MAX) return 2;
                int in = rb_in(refuted, y);
                if (in < 0) return -1;
                if (!in) {
                    int fr = rb_range_is_free(b, y, y + size);
                    if (fr != 0) {
                        if (fr == 1) *out = y;
                        return fr;
                    }
                }
            }
        }
    }
    if (!rb_walk_init(b, &w, last)) return 2;
    int have = 0;
    uint64_t cs = 0, ce = 0;
    for (int n = 0;; n++) {
        if ((r = rb_walk_next(b, &w, &s, &e)) != 1) {
            if (r != 0) return r;
            break;
        }
        if (n >= EXACT_SCAN || s < vs) break;
        uint64_t end = e < last ? e : last;
        if (have && cs == end) { /* a parked block touching a tree block: one range */
            cs = s;
            continue;
        }
        if (have && ce - cs == size) {
            int in = rb_in(refuted, cs);
            if (in < 0) return -1;
            if (!in) {
                *out = cs;
                return 1;
            }
        }
        cs = s;
        ce = end;
        have = 1;
    }
    if (have && ce - cs == size) {
        int in = rb_in(refuted, cs);
        if (in < 0) return -1;
        if (!in) {
            *out = cs;
            return 1;
        }
    }
    return 0;
}

/* TraceHarness.adopt_area(addr, ev.size, ev.vstart, ev.vend, cpu) in Python (claim_range's
 * other cases), its notes added to the result as Replayer._adopt adds them. */
static int rb_adopt_area_py(rb_t *b, PyObject *ev, PyObject *addr_o, long cpu, PyObject **out) {
    PyObject *cpu_o = PyLong_FromLong(cpu);
    if (!cpu_o || rb_counters(b) < 0) {
        Py_XDECREF(cpu_o);
        return -1;
    }
    PyObject *a[6] = {b->harness, addr_o, SLOT(ev, off_alloc[1]), SLOT(ev, off_alloc[3]),
                      SLOT(ev, off_alloc[4]), cpu_o};
    PyObject *r = PyObject_VectorcallMethod(rb_s[RB_ADOPT_AREA], a, 6, NULL);
    Py_DECREF(cpu_o);
    if (!r) return -1;
    int rc = 0;
    PyObject *notes = PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2 ? PyTuple_GET_ITEM(r, 1) : NULL;
    Py_ssize_t k = notes ? PySequence_Size(notes) : -1;
    if (k < 0) rc = -1;
    if (rc == 0 && k > 0) { /* result.notes.extend(f"line {ev.line}: {n}" for n in notes[:3]) */
        PyObject *lst = PyDict_GetItemWithError(b->res_d, rb_s[RB_NOTES]);
        if (!lst || !PyList_Check(lst)) rc = -1;
        for (Py_ssize_t j = 0; rc == 0 && j < k && j < 3; j++) {
            PyObject *n = PySequence_GetItem(notes, j);
            PyObject *line = n ? PyUnicode_FromFormat("line %S: %S", SLOT(ev, off_hdr[0][5]), n)
                               : NULL;
            if (!line || PyList_Append(lst, line) < 0) rc = -1;
            Py_XDECREF(line);
            Py_XDECREF(n);
        }
    }
    if (rc < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "adopt_area must return (area, notes)");
    if (rc == 0 && out != NULL) {
        *out = PyTuple_GET_ITEM(r, 0);
        Py_INCREF(*out);
    }
    Py_DECREF(r);
    return rc;
}

/* A new busy area [addr, end) tagged flags_o: VmapArea, insert_vmap_area. 0 (*out: the
 * area, a new reference, when out is not NULL), -1. */
static int rb_insert_new(rb_t *b, PyObject *addr_o, uint64_t addr, PyObject *end_o,
                         uint64_t end, PyObject *flags_o, PyObject **out) {
    ctx_t *c = &b->c;
    PyObject *va = new_va(addr_o, end_o);
    if (va == NULL) return -1;
    grave_t g;
    g.n = 0;
    set_slot(&g, va, off_flags, flags_o);
    Py_ssize_t bi = c->n > 1 ? (Py_ssize_t)((addr / c->zone) % (uint64_t)c->n) : 0;
    int err = 0, linked = busy_link(&g, PyTuple_GET_ITEM(c->busy, bi), va, addr, end);
    if (linked < 0) err = 1;
    else if (linked) {
        set_state(&g, va, st_busy);
        b->d_busy++;
    } else { /* an overlap: the reference complains and raises */
        PyObject *r = rb_counters(b) < 0 ? NULL
                      : PyObject_CallMethodOneArg(b->space, s_insert_vmap_area, va);
        if (!r) err = 1;
        Py_XDECREF(r);
    }
    flush(&g);
    if (!err && out != NULL) *out = va;
    else Py_DECREF(va);
    return err ? -1 : 0;
}

/* Replayer._adopt_at(addr) of the allocation ev (`size` bytes, `align`, the full range,
 * the area tagged flags_o): 1 adopted, 0 not (nothing changed: the reference, for a held
 * decay the kernel allocates in), -1 error. As Replayer._adopt: a pool entry inside a
 * parked block splits it (Beliefs.split_parked, the area inserted busy); else the parked
 * blocks overlapping the range go back to the free tree (unpark_overlapping) and
 * TraceHarness.adopt_area claims it (its seed_busy case here: inside one free block; the
 * others through the method). Then Beliefs.forget(addr). */
static int rb_adopt(rb_t *b, PyObject *ev, PyObject *addr_o, uint64_t addr, uint64_t size,
                    uint64_t align, long cpu, PyObject *flags_o, PyObject **out) {
    ctx_t *c = &b->c;
    uint64_t s, e, hs, he, evstart;
    if ((u128)addr + size > UINT64_MAX || !PyLong_CheckExact(flags_o) || align == 0 ||
        !u64_of(SLOT(ev, off_alloc[3]), &evstart))
        return 0;
    uint64_t end = addr + size;
    /* a held decay the kernel allocates in: Replayer._decay_reached_tree */
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(b->held); k++) {
        PyObject *va = PyList_GET_ITEM(b->held, k);
        if (Py_TYPE(va) != va_type || !va_bounds(va, &hs, &he) || (hs < end && addr < he))
            return 0;
    }
    PyObject *starts = b->pstarts, *hits = NULL, *end_o = NULL;
    int rc = -1;
    if (PyDict_GET_SIZE(b->parked)) {
        Py_ssize_t lo = rb_bisect(starts, addr, 1), hi = rb_bisect(starts, end, 0);
        if (lo < 0 || hi < 0) return 0;
        /* parked_at(addr), and whether addr is the aligned bottom of it (_at_bottom) */
        if (lo > 0) {
            int pr = rb_parked_block(b, lo - 1, &hs, &he);
            if (pr <= 0) return pr;
            u128 base = hs > evstart ? hs : evstart;
            u128 bottom = (base + align - 1) & ~(u128)(align - 1);
            if (addr < he && end <= he && bottom != addr) { /* Beliefs.split_parked */
                PyObject *pk_start = PyList_GET_ITEM(starts, lo - 1), *pk;
                uint64_t ks;
                if (!u64_of(pk_start, &ks) || ks != hs) return 0;
                pk = PyDict_GetItemWithError(b->parked, pk_start);
                if (!pk) return PyErr_Occurred() ? -1 : 0;
                Py_INCREF(pk);
                Py_INCREF(pk_start);
                PyObject *left = NULL, *right = NULL, *repl = PyList_New(0);
                end_o = PyLong_FromUnsignedLongLong(end);
                int ok = repl && end_o && PyDict_DelItem(b->parked, pk_start) == 0;
                if (ok && hs < addr)
                    ok = (left = new_va(SLOT(pk, off_start), addr_o)) != NULL &&
                         PyList_Append(repl, SLOT(pk, off_start)) == 0 &&
                         PyDict_SetItem(b->parked, SLOT(pk, off_start), left) == 0;
                if (ok && end < he)
                    ok = (right = new_va(end_o, SLOT(pk, off_end))) != NULL &&
                         PyList_Append(repl, end_o) == 0 &&
                         PyDict_SetItem(b->parked, end_o, right) == 0;
                if (ok) ok = PyList_SetSlice(starts, lo - 1, lo, repl) == 0;
                Py_XDECREF(left);
                Py_XDECREF(right);
                Py_XDECREF(repl);
                Py_DECREF(pk_start);
                Py_DECREF(pk);
                /* _tagged, insert_vmap_area, stats.allocs */
                if (ok && rb_insert_new(b, addr_o, addr, end_o, end, flags_o, out) == 0) {
                    b->d_allocs++;
                    rc = 1;
                }
                goto out;
            }
        }
        /* Beliefs.unpark_overlapping(addr, end) */
        for (Py_ssize_t k = lo > 0 ? lo - 1 : 0; k < hi; k++) {
            int pr = rb_parked_block(b, k, &hs, &he);
            if (pr <= 0) {
                Py_XDECREF(hits);
                return pr;
            }
            if (he > addr) {
                if (!hits && !(hits = PyList_New(0))) return -1;
                if (PyList_Append(hits, PyList_GET_ITEM(starts, k)) < 0) goto out;
            }
        }
    }
    if (hits) { /* --- commit: each back to the free tree, then adopt_area (Python) --- */
        if (rb_counters(b) < 0) goto out;
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(hits); j++) {
            PyObject *st = PyList_GET_ITEM(hits, j);
            uint64_t sv;
            Py_ssize_t at;
            if (!u64_of(st, &sv) || (at = rb_bisect(starts, sv, 0)) < 0 ||
                at >= PyList_GET_SIZE(starts)) {
                PyErr_SetString(PyExc_SystemError, "replay_run: parked starts changed");
                goto out;
            }
            PyObject *va = PyDict_GetItemWithError(b->parked, st);
            if (!va) {
                if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, st);
                goto out;
            }
            Py_INCREF(va);
            PyObject *r = NULL;
            if (PyList_SetSlice(starts, at, at + 1, NULL) == 0 &&
                PyDict_DelItem(b->parked, st) == 0)
                r = PyObject_CallMethodOneArg(c->free, rb_s[RB_MERGE], va);
            Py_DECREF(va);
            if (!r) goto out;
            Py_DECREF(r);
        }
        rc = rb_adopt_area_py(b, ev, addr_o, cpu, out) < 0 ? -1 : 1;
        goto out;
    }
    /* TraceHarness._busy_at: inside one free block (seed_busy), else claim_range */
    int bad = 0;
    PyObject *blk = rb_enclose(c->root, addr, &bad);
    if (bad) return 0;
    if (blk == NULL || !va_bounds(blk, &s, &e) || !(s <= addr && end <= e)) {
        rc = rb_adopt_area_py(b, ev, addr_o, cpu, out) < 0 ? -1 : 1;
        goto out;
    }
    /* --- commit: va_clip, VmapArea(addr, end) with the flags, insert_vmap_area,
     * stats.allocs (TraceHarness.adopt_area) --- */
    end_o = PyLong_FromUnsignedLongLong(end);
    if (!end_o) goto out;
    grave_t g;
    g.n = 0;
    int delta = 0;
    PyObject *lva = NULL, *other = NULL;
    Py_INCREF(blk);
    int fit = clip_core(&g, c->root, blk, s, e, addr_o, addr, size, b->fits, &delta, &lva, &other);
    flush(&g);
    Py_DECREF(blk);
    if (fit > 0) b->d_free += delta;
    if (fit > 0 && lva != NULL) { /* the NE split's left part overlaps: complain */
        PyObject *r = rb_counters(b) < 0 ? NULL
                      : PyObject_CallMethodObjArgs(c->free, s_complain_overlap, lva, other, NULL);
        if (!r) fit = -1;
        Py_XDECREF(r);
    }
    Py_XDECREF(lva);
    Py_XDECREF(other);
    if (fit <= 0) {
        if (fit == 0) PyErr_SetString(PyExc_SystemError, "replay_run: NOTHING_FIT after checks");
        goto out;
    }
    if (rb_insert_new(b, addr_o, addr, end_o, end, flags_o, out) < 0) goto out;
    b->d_allocs++;
    rc = 1;
out:
    Py_XDECREF(hits);
    Py_XDECREF(end_o);
    if (rc == 1 && rb_forget(b, addr_o) < 0) rc = -1;
    return rc;
}

/* Beliefs.saw_hidden_head(key, addr) */
static int rb_saw_hidden_head(rb_t *b, PyObject *key, PyObject *addr_o) {
    PyObject *last = PyDict_GetItemWithError(b->hidden_head, key);
    if (last == NULL && PyErr_Occurred()) return -1;
    if (last != NULL && last != Py_None) {
        int ne = PyObject_RichCompareBool(last, addr_o, Py_NE);
        if (ne < 0) return -1;
        if (ne) {
            Py_INCREF(last); /* hidden_head[key] is replaced below */
            PyObject *before = PyDict_GetItemWithError(b->hprev, key);
            int rc = 0;
            if (before == NULL && PyErr_Occurred()) rc = -1;
            else if (before != NULL) rc = PyDict_SetItem(b->hprev2, key, before);
            if (rc == 0) rc = PyDict_SetItem(b->hprev, key, last);
            Py_DECREF(last);
            if (rc < 0) return -1;
        }
    }
    return PyDict_SetItem(b->hidden_head, key, addr_o);
}

/* Replayer._alloc_one with a hidden pool's guessed head that is the kernel's address:
 * _adopt_at it, Decision("pool", node, idx), the matched event's counters,
 * Beliefs.saw_hidden_head and forget. 1, 0 (nothing changed: the reference), -1. */
static int rb_hidden_alloc(rb_t *b, PyObject *ev, PyObject *key, PyObject *addr_o,
                           uint64_t addr, uint64_t size, uint64_t align, long cpu,
                           long node, uint64_t idx) {
    int r = rb_adopt(b, ev, addr_o, addr, size, align, cpu, PyTuple_GET_ITEM(b->c.vnflags, node), NULL);
    if (r <= 0) return r;
    b->any_alloc = 1;
    b->compared++;
    b->matched++;
    b->guessed++;
    b->hidden_hits++;
    if (rb_saw_hidden_head(b, key, addr_o) < 0) return -1;
    b->dec_pool_hit = 1;
    b->dec_rotated = 0;
    b->dec_node = node;
    b->dec_pidx = (long)idx;
    b->dec_bs = b->dec_be = b->dec_len = 0;
    b->dec_fit = 0;
    return 1;
}

/* Beliefs.saw_kernel_tree_choice(addr, length) */
static int rb_saw_tree_choice(rb_t *b, PyObject *addr_o, uint64_t addr, uint64_t length) {
    PyObject *len_o = PyLong_FromUnsignedLongLong(length);
    if (!len_o) return -1;
    PyObject *h = PyDict_GetItemWithError(b->high, len_o);
    int gt = 0;
    if (h != NULL) /* addr > kernel_tree_high.get(length, 0) */
        gt = PyObject_RichCompareBool(addr_o, h, Py_GT);
    else
        gt = PyErr_Occurred() ? -1 : addr > 0;
    int rc = gt < 0 ? -1 : gt ? PyDict_SetItem(b->high, len_o, addr_o) : 0;
    Py_DECREF(len_o);
    return rc;
}

/* rb_next(blk) in the free tree (borrowed, NULL at the highest). */
static PyObject *rb_next_of(PyObject *blk) {
    PyObject *n = get_node(blk, off_right);
    if (n != NULL) {
        PyObject *l;
        while ((l = get_node(n, off_left)) != NULL) n = l;
        return n;
    }
    n = get_node(blk, off_parent);
    while (n != NULL && blk == get_node(n, off_right)) {
        blk = n;
        n = get_node(n, off_parent);
    }
    return n;
}

/* What the first allocation of a search-again event chose (see rb_search_again). */
typedef struct {
    PyObject *pool, *found, *vn_id;
    uint64_t choice, s, e, length;
    long visits;
    int rotated, fit;
} rb_first_t;

/* Replayer._alloc_one when the model's tree search ended in a block the kernel's does
 * not reach: TraceHarness.alloc, then Replayer._search_again (undo_alloc, the search
 * skipping unreachable blocks, _adopt_at its address, the Decision), then the matched
 * event's bookkeeping. Applied only when the second search gives the kernel's address;
 * that search is run on the present tree, which is the one the undo leaves when the
 * first allocation clipped its block at one end (LE or RE fit) and its area goes back
 * into that block alone (no free neighbour touches it): the clip and the merge change
 * only that block's bounds and the augment along its path, and put both back. Other
 * fits, a model failure, another address: 0 (nothing changed: the reference). */
static int rb_search_again(rb_t *b, PyObject *ev, PyObject *addr_o, uint64_t addr, uint64_t size,
                           uint64_t align, uint64_t vstart, uint64_t vend, long cpu,
                           rb_first_t *f) {
    ctx_t *c = &b->c;
    uint64_t ns, ne, s2, e2;
    if (!b->explain_was || (f->fit != 2 && f->fit != 3)) return 0;
    PyObject *nb = f->fit == 2 ? rb_prev_of(f->found) : rb_next_of(f->found);
    if (nb != NULL) {
        if (Py_TYPE(nb) != va_type || !va_bounds(nb, &ns, &ne)) return 0;
        if (f->fit == 2 ? ne == f->s : ns == f->e) return 0; /* a neighbour would merge */
    }
    /* Beliefs.search_skipping(size, align, vstart, length) */
    PyObject *len_o = PyLong_FromUnsignedLongLong(f->length);
    PyObject *umax_o = PyLong_FromUnsignedLongLong(c->umax);
    PyObject *high = len_o ? PyDict_GetItemWithError(b->high, len_o) : NULL;
    PyObject *blk = NULL;
    if (len_o && umax_o && (high != NULL || !PyErr_Occurred())) {
        PyObject *root_node = SLOT(c->root, off_root);
        PyObject *sa[9] = {root_node, SLOT(ev, off_alloc[1]), SLOT(ev, off_alloc[2]),
                           SLOT(ev, off_alloc[3]), len_o, umax_o, b->unreach,
                           high ? high : Py_None, b->old};
        blk = sp_search_skipping(NULL, sa, 9);
    }
    Py_XDECREF(len_o);
    Py_XDECREF(umax_o);
    if (blk == NULL) {
        if (!PyErr_Occurred() || !PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear(); /* a value the compiled walk declines: the reference */
        return 0;
    }
    int ok = blk != Py_None && Py_TYPE(blk) == va_type && va_bounds(blk, &s2, &e2);
    Py_DECREF(blk); /* the tree keeps it */
    if (!ok) return 0; /* -ENOENT: the model fails */
    u128 nva = (((u128)(s2 > vstart ? s2 : vstart)) + align - 1) & ~(u128)(align - 1);
    if (nva + size > vend || nva != addr) return 0; /* -ERANGE, or a divergence */
    uint64_t end = addr + size;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(b->held); k++) { /* _decay_reached_tree */
        PyObject *va = PyList_GET_ITEM(b->held, k);
        if (Py_TYPE(va) != va_type || !va_bounds(va, &ns, &ne) || (ns < end && addr < ne))
            return 0;
    }
    /* --- commit: TraceHarness.alloc as alloc_vmap_area_once commits it --- */
    if (PyDict_GetItemWithError(c->space_d, s_explain) != Py_False &&
        PyDict_SetItem(c->space_d, s_explain, Py_False) < 0)
        return -1;
    if (f->rotated) { /* the misaligned head to the tail */
        PyObject *r = call2(dq_rotate, f->pool, minus_one);
        if (!r) return -1;
        Py_DECREF(r);
    }
    b->d_visits += f->visits;
    b->lph = 0;
    PyObject *ch_o = PyLong_FromUnsignedLongLong(f->choice);
    PyObject *che_o = ch_o ? PyLong_FromUnsignedLongLong(f->choice + size) : NULL;
    if (!che_o) {
        Py_XDECREF(ch_o);
        return -1;
    }
    grave_t g;
    g.n = 0;
    int delta = 0, err = 0;
    PyObject *lva = NULL, *other = NULL, *va = NULL;
    Py_INCREF(f->found);
    int fit = clip_core(&g, c->root, f->found, f->s, f->e, ch_o, f->choice, size, b->fits,
                        &delta, &lva, &other);
    flush(&g);
    Py_DECREF(f->found);
    Py_XDECREF(lva); /* LE/RE: no split */
    Py_XDECREF(other);
    if (fit == f->fit) {
        b->d_free += delta;
        va = new_va(ch_o, che_o);
    }
    Py_DECREF(ch_o);
    Py_DECREF(che_o);
    if (va == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_SystemError, "replay_run: clip changed");
        return -1;
    }
    set_slot(&g, va, off_vm, Py_None);
    set_slot(&g, va, off_flags, f->vn_id);
    Py_ssize_t bi = c->n > 1 ? (Py_ssize_t)((f->choice / c->zone) % (uint64_t)c->n) : 0;
    PyObject *root = PyTuple_GET_ITEM(c->busy, bi);
    if (busy_link(&g, root, va, f->choice, f->choice + size) != 1) err = 1;
    else {
        set_state(&g, va, st_busy);
        /* TraceHarness.undo_alloc(va, False): unlink_vmap_area, the free tree again */
        aug_t a = {NULL};
        PyObject *rebalance = NULL;
        err = rb_erase_impl(&g, va, root, &a, &rebalance) < 0;
        if (!err && rebalance != NULL) err = rb_erase_color_impl(&g, rebalance, root, &a) < 0;
    }
    if (!err) {
        set_node(&g, va, off_parent, NULL);
        set_node(&g, va, off_left, NULL);
        set_node(&g, va, off_right, NULL);
        set_state(&g, va, st_detached);
        set_slot(&g, va, off_vm, Py_None);
        PyObject *into = NULL;
        int rc = merge_core(&g, c->root, va, c->each_step, &into, &delta);
        if (rc == 0) b->d_free += delta;
        else err = 1;
    }
    flush(&g);
    Py_DECREF(va);
    if (err) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_SystemError, "replay_run: the search-again undo failed");
        return -1;
    }
    /* _adopt_at(nva): the compiled case, else the method */
    int r = rb_adopt(b, ev, addr_o, addr, size, align, cpu, f->vn_id, NULL);
    if (r < 0) return -1;
    if (r == 0) {
        PyObject *cpu_o = PyLong_FromLong(cpu);
        PyObject *res = cpu_o && rb_counters(b) == 0
                            ? PyObject_CallMethod(b->rp, "_adopt_at", "OOO", addr_o, ev, cpu_o)
                            : NULL;
        Py_XDECREF(cpu_o);
        if (!res) return -1;
        Py_DECREF(res);
    }
    /* searches_skipping_unreachable, the matched event's bookkeeping */
    b->searches++;
    b->any_alloc = 1;
    b->compared++;
    b->matched++;
    if (align > 4096) {
        if (e2 - s2 < f->length && !b->kstate_seed) b->guessed++;
        if (rb_saw_tree_choice(b, addr_o, addr, f->length) < 0) return -1;
    }
    if (rb_forget(b, addr_o) < 0) return -1;
    b->dec_pool_hit = 0;
    b->dec_rotated = 0;
    b->dec_node = b->dec_pidx = -1;
    b->dec_bs = s2;
    b->dec_be = e2;
    b->dec_len = f->length;
    b->dec_fit = addr == s2 ? (end == e2 ? 1 : 2) : (end == e2 ? 3 : 4);
    return 1;
}

/* One alloc_vmap_area event: 1 applied, 0 not common (nothing changed), -1 error. */
static int rb_alloc(rb_t *b, PyObject *ev) {
    ctx_t *c = &b->c;
    /* Replayer.alloc: an event already applied out of trace order (before an earlier
     * one, a lock-order race): it is only taken off the set */
    if (PySet_GET_SIZE(b->reordered)) {
        PyObject *id = PyLong_FromVoidPtr(ev);
        if (!id) return -1;
        int in = PySet_Contains(b->reordered, id);
        if (in > 0) in = PySet_Discard(b->reordered, id) < 0 ? -1 : 1;
        Py_DECREF(id);
        if (in != 0) return in;
    }
    PyObject *addr_o = SLOT(ev, off_alloc[0]), *size_o = SLOT(ev, off_alloc[1]),
             *align_o = SLOT(ev, off_alloc[2]), *vstart_o = SLOT(ev, off_alloc[3]),
             *vend_o = SLOT(ev, off_alloc[4]), *failed_o = SLOT(ev, off_alloc[5]),
             *cpu_o = SLOT(ev, off_hdr[0][2]);
    uint64_t addr, size, align, vstart, vend, failed;
    if (!u64_of(addr_o, &addr) || !u64_of(size_o, &size) || !u64_of(align_o, &align) ||
        !u64_of(vstart_o, &vstart) || !u64_of(vend_o, &vend) || !u64_of(failed_o, &failed) ||
        failed != 0 || cpu_o == NULL || !PyLong_CheckExact(cpu_o))
        return 0; /* the kernel failed, or values the reference handles */
    int of = 0;
    long ecpu = PyLong_AsLongAndOverflow(cpu_o, &of);
    if (of || ecpu < 0) return 0;
    long cpu = ecpu % b->cpus;
    if (size == 0 || (size & 4095) || align == 0 || (align & (align - 1))) return 0;
    int full = vstart == c->vstart && vend == c->vend;
    uint64_t idx = (size - 1) >> 12;
    long node = (long)(cpu % c->n);
    int node_pools = b->node_pools;
    PyObject *pool = NULL; /* borrowed from the node's pools dict */
    Py_ssize_t pool_len = 0;
    if (c->n > 1 && full) {
        PyObject *pd = PyTuple_GET_ITEM(c->pools, node);
        if (!PyDict_CheckExact(pd)) return 0;
        PyObject *k = PyLong_FromUnsignedLongLong(idx);
        if (!k) return -1;
        pool = PyDict_GetItemWithError(pd, k);
        Py_DECREF(k);
        if (pool == NULL && PyErr_Occurred()) return -1;
        if (pool != NULL) {
            if (Py_TYPE(pool) != deque_type) return 0;
            pool_len = PySequence_Size(pool);
            if (pool_len < 0) return -1;
        }
    }
    /* Replayer._hidden_guess: a pool hidden at snapshot time whose next head the model
     * infers (the model's own pool being empty): when the guess is the kernel's address,
     * _adopt_at it and count the hit; another guess is a divergence (the reference); no
     * guess, the model's own choice below */
    if (b->infer && PyDict_GET_SIZE(b->hidden_head) && c->n > 1 && full && idx < b->max_va &&
        pool_len == 0) {
        PyObject *key = Py_BuildValue("(lK)", node, (unsigned long long)idx);
        if (!key) return -1;
        PyObject *last = PyDict_GetItemWithError(b->hidden_head, key);
        uint64_t lastv, guess = 0;
        int r = 0;
        if (last == NULL && PyErr_Occurred()) r = -1;
        else if (last != NULL && last != Py_None)
            r = b->explain_was && u64_of(last, &lastv)
                    ? rb_hidden_guess(b, key, lastv, size, align, &guess)
                    : 2;
        if (r == 1)
            r = guess == addr ? rb_hidden_alloc(b, ev, key, addr_o, addr, size, align, cpu, node, idx) : 0;
        else if (r == 2)
            r = 0;
        else if (r == 0)
            r = 3; /* no guess: the model's own choice */
        Py_DECREF(key);
        if (r != 3) return r;
    }
    /* The model's choice, looked at as alloc_vmap_area_once makes it (nothing changed) */
    PyObject *head = NULL, *found = NULL;
    uint64_t choice = 0, s = 0, e = 0, length = 0;
    int pool_hit = 0, rotated = 0, fit = 0;
    long visits = 0;
    if (node_pools && pool_len > 0) {
        head = PySequence_GetItem(pool, 0);
        if (!head) return -1;
        uint64_t hs, he;
        int ok = Py_TYPE(head) == va_type && va_bounds(head, &hs, &he);
        Py_DECREF(head); /* the pool keeps it */
        if (!ok) return 0;
        if ((hs & (align - 1)) == 0) {
            pool_hit = 1;
            choice = hs;
        } else {
            rotated = 1;
            head = NULL;
        }
    }
    if (!pool_hit) {
        int adjust = c->adjust ? !(align <= 4096 || (vend >= vstart && vend - vstart == size)) : 1;
        if (!c->shift && !adjust && align > 1) return 0;
        if (adjust && (u128)size + align - 1 > UINT64_MAX) return 0;
        length = adjust ? size + align - 1 : size;
        if (!lowest_core(get_node(c->root, off_root), size, align, vstart, adjust, c->shift,
                         c->umax, &visits, &found) ||
            found == NULL || !va_bounds(found, &s, &e))
            return 0; /* the model fails (-ENOENT), or values past 64 bits */
        u128 base = s > vstart ? s : vstart;
        choice = (uint64_t)((base + align - 1) & (u128)(~(align - 1) & c->umax));
        u128 nva_end = (u128)choice + size;
        if (nva_end > vend || choice < s || nva_end > e || is_error_addr(c, choice, vend))
            return 0; /* -ERANGE: the model fails */
        fit = choice == s ? (nva_end == e ? 1 : 2) : (nva_end == e ? 3 : 4);
        /* Replayer._alloc_one: a block the kernel's search does not reach */
        if (PyDict_GET_SIZE(b->unreach) || e - s < length) {
            int u = rb_unreachable(b, s, e, length);
            if (u == 1) { /* Replayer._search_again */
                rb_first_t f = {pool, found, c->n > 1 && full ? PyTuple_GET_ITEM(c->vnflags, node)
                                                              : small_zero,
                                choice, s, e, length, visits, rotated, fit};
                return rb_search_again(b, ev, addr_o, addr, size, align, vstart, vend, cpu, &f);
            }
            if (u != 0) return u < 0 ? -1 : 0;
        }
    }
    if (choice != addr) return 0; /* a mismatch: Python explains it */
    /* a pool hit on an area of guessed node: Beliefs.vote_node below */
    int vote = 0;
    uint64_t vote_cls = 0;
    if (pool_hit && PyDict_GET_SIZE(b->unknown)) {
        PyObject *u = PyDict_GetItemWithError(b->unknown, SLOT(head, off_start));
        uint64_t hs, he;
        if (u == NULL && PyErr_Occurred()) return -1;
        if (u == head) {
            if (!va_bounds(head, &hs, &he) || he <= hs || b->node_votes == NULL) return 0;
            vote = 1;
            vote_cls = (he - hs - 1) >> 12;
            if (vote_cls > (uint64_t)MAX_CLASS) vote_cls = (uint64_t)MAX_CLASS;
        }
    }
    /* --- apply: TraceHarness.alloc -> VmapSpace.alloc_vmap_area_once, as the whole
     * operation commits it (its checks were made in rb_setup and above) --- */
    if (b->explain_was && PyDict_GetItemWithError(c->space_d, s_explain) != Py_False &&
        PyDict_SetItem(c->space_d, s_explain, Py_False) < 0)
        return -1;
    PyObject *va = NULL, *vn_id_o = small_zero;
    if (c->n > 1 && full) vn_id_o = PyTuple_GET_ITEM(c->vnflags, node);
    grave_t g;
    g.n = 0;
    int err = 0;
    if (pool_hit) { /* node_pool_del_va: the pool's head */
        PyObject *r = call1(dq_popleft, pool);
        if (!r) return -1;
        va = r; /* the head, now ours */
        set_state(&g, va, st_detached);
        b->d_pool_hits++;
        b->lph = 1;
    } else { /* the lowest match, clipped */
        if (rotated) { /* the misaligned head to the tail */
            PyObject *r = call2(dq_rotate, pool, minus_one);
            if (!r) return -1;
            Py_DECREF(r);
        }
        b->d_visits += visits;
        b->lph = 0;
        PyObject *end_o = PyLong_FromUnsignedLongLong(addr + size);
        if (!end_o) return -1;
        int delta = 0;
        PyObject *lva = NULL, *other = NULL;
        Py_INCREF(found);
        int fit2 = clip_core(&g, c->root, found, s, e, addr_o, addr, size, b->fits, &delta, &lva,
                             &other);
        flush(&g);
        Py_DECREF(found);
        if (fit2 > 0) b->d_free += delta;
        if (fit2 > 0 && lva != NULL) { /* the NE split's left part overlaps: complain */
            PyObject *r = rb_counters(b) < 0 ? NULL
                          : PyObject_CallMethodObjArgs(c->free, s_complain_overlap, lva, other,
                                                       NULL);
            if (!r) fit2 = -1;
            Py_XDECREF(r);
        }
        Py_XDECREF(lva);
        Py_XDECREF(other);
        if (fit2 > 0) va = new_va(addr_o, end_o);
        Py_DECREF(end_o);
        if (fit2 <= 0 || va == NULL) {
            if (fit2 == 0) PyErr_SetString(PyExc_SystemError, "replay_run: NOTHING_FIT after checks");
            return -1;
        }
    }
    /* va.vm, va.flags, insert_vmap_area, stats.allocs */
    set_slot(&g, va, off_vm, Py_None);
    set_slot(&g, va, off_flags, vn_id_o);
    Py_ssize_t bi = c->n > 1 ? (Py_ssize_t)((addr / c->zone) % (uint64_t)c->n) : 0;
    int linked = busy_link(&g, PyTuple_GET_ITEM(c->busy, bi), va, addr, addr + size);
    if (linked < 0) err = 1;
    else if (linked) {
        set_state(&g, va, st_busy);
        b->d_busy++;
    } else { /* an overlap: the reference complains and raises */
        PyObject *r = rb_counters(b) < 0 ? NULL
                      : PyObject_CallMethodOneArg(b->space, s_insert_vmap_area, va);
        if (!r) err = 1;
        Py_XDECREF(r);
    }
    flush(&g);
    Py_DECREF(va);
    if (err) return -1;
    b->d_allocs++;
    /* --- the matched event's bookkeeping (Replayer._alloc_one) --- */
    b->any_alloc = 1;
    b->compared++;
    b->matched++;
    if (!pool_hit && align > 4096) {
        if (e - s < length && !b->kstate_seed) b->guessed++;
        if (rb_saw_tree_choice(b, addr_o, addr, length) < 0) return -1;
    }
    if (vote) { /* Beliefs.vote_node(va, node, node): the guess confirmed, one vote */
        b->guessed++;
        PyObject *key = Py_BuildValue("(Kll)", (unsigned long long)vote_cls, node, node);
        PyObject *n = key ? PyDict_GetItemWithError(b->node_votes, key) : NULL;
        PyObject *n1 = NULL;
        if (key && (n != NULL || !PyErr_Occurred()))
            n1 = n ? PyNumber_Add(n, small_one) : Py_NewRef(small_one);
        int rc = n1 ? PyDict_SetItem(b->node_votes, key, n1) : -1;
        Py_XDECREF(n1);
        Py_XDECREF(key);
        if (rc < 0) return -1;
    }
    if (rb_forget(b, addr_o) < 0) return -1;
    b->dec_pool_hit = pool_hit;
    b->dec_rotated = rotated;
    b->dec_node = node_pools && pool_len > 0 ? node : -1;
    b->dec_pidx = node_pools && pool_len > 0 ? (long)idx : -1;
    b->dec_bs = s;
    b->dec_be = e;
    b->dec_len = length;
    b->dec_fit = fit;
    return 1;
}

/* One free_vmap_area_noflush event: 1 applied, 0 not common (nothing changed), -1. */
static int rb_free(rb_t *b, PyObject *ev, PyObject *ts_o) {
    ctx_t *c = &b->c;
    PyObject *start_o = SLOT(ev, off_free[0]), *cpu_o = SLOT(ev, off_hdr[1][2]);
    uint64_t start, nr_lazy, nr_max, lazy_nr, s, e;
    if (b->armed_set) return 0; /* the purge's first phase may run before it */
    if (!u64_of(start_o, &start) || !u64_of(SLOT(ev, off_free[1]), &nr_lazy) ||
        !u64_of(SLOT(ev, off_free[2]), &nr_max) || cpu_o == NULL || !PyLong_CheckExact(cpu_o))
        return 0;
    int of = 0;
    long ecpu = PyLong_AsLongAndOverflow(cpu_o, &of);
    if (of || ecpu < 0) return 0;
    /* the busy area at that address, in its address's node (find_unlink_vmap_area) */
    Py_ssize_t bi = c->n > 1 ? (Py_ssize_t)((start / c->zone) % (uint64_t)c->n) : 0;
    PyObject *node = get_node(PyTuple_GET_ITEM(c->busy, bi), off_root);
    while (node != NULL) {
        if (Py_TYPE(node) != va_type || !va_bounds(node, &s, &e)) return 0;
        if (start < s) node = get_node(node, off_left);
        else if (start >= e) node = get_node(node, off_right);
        else break;
    }
    if (node == NULL || s != start || e < s) return 0; /* unknown, or in another node */
    PyObject *nr_o = d_int(c->space_d, s_vmap_lazy_nr);
    PyObject *lazy = PyDict_GetItemWithError(c->space_d, s_lazy);
    if (!nr_o || !u64_of(nr_o, &lazy_nr) || !lazy || Py_TYPE(lazy) != deque_type)
        return PyErr_Occurred() ? -1 : 0;
    u128 after = (u128)lazy_nr + ((e - s) >> 12);
    if (after > UINT64_MAX) return 0;
    /* Replayer.free: a drop in nr_lazy that shows nodes of the open purge done */
    if (!b->pending_none && b->marked && after > nr_lazy) return 0;
    /* ... or the free after which the next purge starts (early decay) */
    Py_ssize_t nlazy = PySequence_Size(lazy);
    if (nlazy < 0) return -1;
    if (b->early && b->has_next && b->pending_none && (uint64_t)nlazy + 1 == b->npurged) return 0;
    /* --- apply: TraceHarness.free, as find_unlink_vmap_area and free_vmap_area_noflush
     * commit it --- */
    PyObject *va = node;
    Py_INCREF(va);
    grave_t g;
    g.n = 0;
    aug_t a = {NULL};
    PyObject *rebalance = NULL, *root = PyTuple_GET_ITEM(c->busy, bi);
    int rc = rb_erase_impl(&g, va, root, &a, &rebalance);
    if (rc == 0 && rebalance != NULL) rc = rb_erase_color_impl(&g, rebalance, root, &a);
    if (rc == 0) {
        set_node(&g, va, off_parent, NULL);
        set_node(&g, va, off_left, NULL);
        set_node(&g, va, off_right, NULL);
        b->d_busy--;
        /* vmap_lazy_nr, the lazy FIFO, the counter */
        PyObject *nr_new = PyLong_FromUnsignedLongLong((uint64_t)after);
        rc = nr_new ? PyDict_SetItem(c->space_d, s_vmap_lazy_nr, nr_new) : -1;
        Py_XDECREF(nr_new);
    }
    if (rc == 0) {
        set_state(&g, va, st_lazy);
        set_slot(&g, va, off_vm, Py_None);
        PyObject *r = call2(dq_append, lazy, va);
        if (!r) rc = -1;
        Py_XDECREF(r);
        b->d_lazy_frees++;
    }
    flush(&g);
    Py_DECREF(va);
    if (rc < 0) return -1;
    if (after > c->lazy_max) { /* past lazy_max_pages: the purge is queued */
        PyObject *r = rb_counters(b) < 0 ? NULL
                      : PyObject_CallMethodNoArgs(b->space, rb_s[RB_THRESHOLD]);
        if (!r) return -1;
        Py_DECREF(r);
    }
    /* --- the event's bookkeeping (Replayer.free) --- */
    b->frees++;
    lazy = PyDict_GetItemWithError(c->space_d, s_lazy);
    if (lazy == NULL) return PyErr_Occurred() ? -1 : 0;
    nlazy = PySequence_Size(lazy);
    if (nlazy < 0) return -1;
    if (nlazy > 0) {
        PyObject *last = PySequence_GetItem(lazy, nlazy - 1);
        if (!last) return -1;
        uint64_t ls, le;
        int rc = 0;
        if (Py_TYPE(last) == va_type && va_bounds(last, &ls, &le) && ls == start) {
            PyObject *sz = PyLong_FromUnsignedLongLong(le - ls);
            rc = sz ? PyDict_SetItem(b->recycled, start_o, sz) : -1;
            Py_XDECREF(sz);
        }
        Py_DECREF(last);
        if (rc < 0) return -1;
    }
    /* lazy drift: a difference that lasts DRIFT_RUN consecutive frees */
    nr_o = PyDict_GetItemWithError(c->space_d, s_vmap_lazy_nr);
    if (nr_o == NULL) return -1;
    int ne = PyObject_RichCompareBool(nr_o, SLOT(ev, off_free[1]), Py_NE);
    if (ne < 0) return -1;
    if (ne) {
        if (++b->drift_run >= rb_drift_limit) {
            b->lazy_drift++;
            PyObject *first = PyDict_GetItemWithError(b->res_d, rb_s[RB_FIRST_DRIFT]);
            if (first == Py_None &&
                PyDict_SetItem(b->res_d, rb_s[RB_FIRST_DRIFT], SLOT(ev, off_hdr[1][5])) < 0)
                return -1;
        }
    } else
        b->drift_run = 0;
    /* schedule_work(drain_vmap_work) at the free that crossed lazy_max_pages */
    if (nr_lazy > nr_max &&
        PyDict_GetItemWithError(b->rp_d, rb_s[RB_CROSSED]) == Py_None &&
        PyDict_SetItem(b->rp_d, rb_s[RB_CROSSED], ts_o) < 0)
        return -1;
    return 1;
}

/* Replayer.before when the next purge event is behind event i: the one after it
 * (_nxt, _next_purge, _purge_index). 1, 0 (not as the batch reads it: the reference), -1. */
static int rb_next_purge(rb_t *b, Py_ssize_t i) {
    PyObject *d = b->rp_d, *at = PyDict_GetItemWithError(d, rb_s[RB_PURGE_AT]);
    PyObject *evs = PyDict_GetItemWithError(d, rb_s[RB_EVENTS_ATTR]);
    long j;
    if (!at || !PyList_CheckExact(at) || evs != b->events || !rb_long(d, RB_NXT, &j) || j < 0)
        return PyErr_Occurred() ? -1 : 0;
    Py_ssize_t n = PyList_GET_SIZE(at);
    long k = -1;
    for (; j < n; j++) {
        PyObject *o = PyList_GET_ITEM(at, j);
        int of = 0;
        k = PyLong_CheckExact(o) ? PyLong_AsLongAndOverflow(o, &of) : -1;
        if (k < 0 || of || k >= PyList_GET_SIZE(evs)) return 0;
        if (k >= i) break;
    }
    PyObject *nxt = j < n ? PyList_GET_ITEM(evs, k) : Py_None;
    uint64_t npurged = 0;
    if (nxt != Py_None && (Py_TYPE(nxt) != ev_purge_t || !u64_of(SLOT(nxt, off_purge[2]), &npurged)))
        return 0;
    /* --- commit --- */
    PyObject *jo = PyLong_FromLong(j), *ko = PyLong_FromLong(j < n ? k : -1);
    int rc = jo && ko && PyDict_SetItem(d, rb_s[RB_NXT], jo) == 0 &&
                     PyDict_SetItem(d, rb_s[RB_NEXT_PURGE], nxt) == 0 &&
                     PyDict_SetItem(d, rb_s[RB_PURGE_INDEX], ko) == 0
                 ? 1
                 : -1;
    Py_XDECREF(jo);
    Py_XDECREF(ko);
    b->purge_index = j < n ? k : -1;
    b->has_next = nxt != Py_None;
    b->npurged = npurged;
    return rc;
}

/* --- compiled twins for the Python handlers (the divergence path calls them) --------- */

/* What rb_adopt reads, gathered for a call from Python (Replayer._adopt): 1, 0 (not a
 * replay the twin mirrors: the reference), -1. */
static int rb_setup_adopt(rb_t *b, PyObject *rp) {
    memset(b, 0, sizeof(*b));
    b->rp = rp;
    b->lph = -1;
    if (rb_types[0] == NULL || ev_alloc_t == NULL || st_busy == NULL || va_ready() < 0) {
        PyErr_Clear();
        return 0;
    }
    if (!(b->rp_d = rb_dict(rp)) || !rb_unreplaced(rp, b->rp_d, RB_T_RP)) return 0;
    PyObject *d = b->rp_d;
    PyObject *res = PyDict_GetItemWithError(d, rb_s[RB_RESULT]);
    PyObject *bel = PyDict_GetItemWithError(d, rb_s[RB_BELIEFS]);
    PyObject *har = PyDict_GetItemWithError(d, rb_s[RB_HARNESS]);
    b->space = PyDict_GetItemWithError(d, rb_s[RB_SPACE]);
    b->harness = har;
    if (!res || !bel || !har || !b->space || Py_TYPE(res) != rb_types[RB_T_RESULT]) return 0;
    if (!(b->res_d = rb_dict(res)) || !(b->b_d = rb_dict(bel)) || !(b->h_d = rb_dict(har)) ||
        !(b->space_d = rb_dict(b->space)))
        return 0;
    if (!rb_unreplaced(bel, b->b_d, RB_T_BELIEFS) || !rb_unreplaced(har, b->h_d, RB_T_HARNESS) ||
        !rb_unreplaced(b->space, b->space_d, RB_T_SPACE) ||
        PyDict_GetItemWithError(b->h_d, rb_s[RB_SPACE]) != b->space)
        return 0;
    int rc = ctx_get(b->space, &b->c);
    if (rc <= 0) return rc;
    b->have_c = 1;
    PyObject *pools_pol = PyDict_GetItemWithError(b->space_d, s_pools);
    PyObject *placement = PyDict_GetItemWithError(b->space_d, s_placement);
    if (!pools_pol || !placement || Py_TYPE(placement) != lowest_match_type ||
        (Py_TYPE(pools_pol) != node_pools_type && Py_TYPE(pools_pol) != no_pools_type))
        return 0;
    b->fits = PyDict_GetItemWithError(b->c.stats_d, s_fits);
    if (PyDict_GetItemWithError(b->c.free_d, s_why) != Py_None || !b->fits ||
        !PyList_CheckExact(b->fits) || PyList_GET_SIZE(b->fits) < 5 ||
        !d_int(b->space_d, s_nr_busy) || !d_int(b->c.free_d, s_nr_free) ||
        !d_int(b->c.stats_d, s_allocs))
        return 0;
    if (!(b->unknown = rb_get(b->b_d, RB_UNKNOWN, &PyDict_Type)) ||
        !(b->refuted = rb_get(b->b_d, RB_REFUTED, &PyDict_Type)) ||
        !(b->recycled = rb_get(b->b_d, RB_RECYCLED, &PyDict_Type)) ||
        !(b->parked = rb_get(b->b_d, RB_PARKED, &PyDict_Type)) ||
        !(b->pstarts = rb_get(b->b_d, RB_PSTARTS, &PyList_Type)) ||
        !(b->held = rb_get(d, RB_HELD, &PyList_Type)))
        return 0;
    return PyErr_Occurred() ? -1 : 1;
}

/* replay_adopt(replayer, ev, cpu, addr) -> the new busy area, or None (nothing changed:
 * the reference runs): Replayer._adopt(ev, cpu, addr) as rb_adopt mirrors it. */
static PyObject *rb_adopt_twin(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "replay_adopt(replayer, ev, cpu, addr)");
        return NULL;
    }
    if (rb_strings() < 0) return NULL;
    PyObject *ev = args[1], *addr_o = args[3], *va = NULL;
    rb_t b;
    int rc = rb_setup_adopt(&b, args[0]);
    uint64_t addr, size, align, vs, ve;
    long cpu = -1;
    if (rc > 0) {
        int of = 0;
        if (PyLong_CheckExact(args[2])) cpu = PyLong_AsLongAndOverflow(args[2], &of);
        if (of || cpu < 0 || Py_TYPE(ev) != ev_alloc_t || !u64_of(addr_o, &addr) ||
            !u64_of(SLOT(ev, off_alloc[1]), &size) || !u64_of(SLOT(ev, off_alloc[2]), &align) ||
            !u64_of(SLOT(ev, off_alloc[3]), &vs) || !u64_of(SLOT(ev, off_alloc[4]), &ve))
            rc = PyErr_Occurred() ? -1 : 0;
    }
    if (rc > 0) {
        ctx_t *c = &b.c;
        PyObject *flags = c->n > 1 && vs == c->vstart && ve == c->vend
                              ? PyTuple_GET_ITEM(c->vnflags, cpu % c->n)
                              : small_zero;
        rc = rb_adopt(&b, ev, addr_o, addr, size, align, cpu, flags, &va);
        if (rb_counters(&b) < 0) rc = -1;
    }
    rb_release(&b);
    if (rc < 0) {
        Py_XDECREF(va);
        return NULL;
    }
    if (rc == 0 || va == NULL) {
        Py_XDECREF(va);
        Py_RETURN_NONE;
    }
    return va;
}

/* hidden_guess(beliefs, node, idx, size, align) -> next_hidden_head's guess (align >
 * PAGE_SIZE) or next_hidden_area's (trace/beliefs.py) for the pool (node, idx): an
 * address, None (no guess), or NotImplemented (not as the twin reads it: the reference
 * runs). Reads only. */
static PyObject *rb_hidden_guess_twin(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "hidden_guess(beliefs, node, idx, size, align)");
        return NULL;
    }
    if (rb_strings() < 0) return NULL;
    rb_t b;
    memset(&b, 0, sizeof(b));
    b.lph = -1;
    PyObject *result = NULL, *key = NULL;
    uint64_t size, align, last, guess = 0;
    int rc = 2; /* 2: declined (NotImplemented), 1: guess, 0: None, -1: error */
    if (rb_types[0] == NULL || va_ready() < 0) {
        PyErr_Clear();
        goto out;
    }
    if (!(b.b_d = rb_dict(args[0])) || !rb_unreplaced(args[0], b.b_d, RB_T_BELIEFS) ||
        !u64_of(args[3], &size) || !u64_of(args[4], &align) || align == 0)
        goto out;
    b.space = PyDict_GetItemWithError(b.b_d, rb_s[RB_SPACE]);
    if (!b.space || Py_TYPE(b.space) != rb_types[RB_T_SPACE]) goto out;
    int got = ctx_get(b.space, &b.c);
    if (got <= 0) {
        if (got < 0) rc = -1;
        goto out;
    }
    b.have_c = 1;
    if (!(b.hidden_head = rb_get(b.b_d, RB_HIDDEN_HEAD, &PyDict_Type)) ||
        !(b.hrefuted = rb_get(b.b_d, RB_HREFUTED, &PyDict_Type)) ||
        !(b.hprev = rb_get(b.b_d, RB_HPREV, &PyDict_Type)) ||
        !(b.hprev2 = rb_get(b.b_d, RB_HPREV2, &PyDict_Type)) ||
        !(b.parked = rb_get(b.b_d, RB_PARKED, &PyDict_Type)) ||
        !(b.pstarts = rb_get(b.b_d, RB_PSTARTS, &PyList_Type)))
        goto out;
    if (!(key = PyTuple_Pack(2, args[1], args[2]))) {
        rc = -1;
        goto out;
    }
    PyObject *last_o = PyDict_GetItemWithError(b.hidden_head, key);
    if (last_o == NULL || last_o == Py_None) {
        rc = PyErr_Occurred() ? -1 : 0; /* no head seen, or used up: no guess */
        goto out;
    }
    if (!u64_of(last_o, &last)) goto out;
    rc = rb_hidden_guess(&b, key, last, size, align, &guess);
out:
    if (rc == 1) result = PyLong_FromUnsignedLongLong(guess);
    else if (rc == 0) result = Py_NewRef(Py_None);
    else if (rc == 2) result = Py_NewRef(Py_NotImplemented);
    Py_XDECREF(key);
    rb_release(&b);
    return rc < 0 ? NULL : result;
}

/* replay_run(replayer, events, i, every) -> the index of the first event left to the
 * Python handlers (len(events) when none is). */
static PyObject *rb_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "replay_run takes 4 arguments");
        return NULL;
    }
    PyObject *events = args[1];
    Py_ssize_t i = PyLong_AsSsize_t(args[2]), every = PyLong_AsSsize_t(args[3]);
    if ((i == -1 || every == -1) && PyErr_Occurred()) return NULL;
    if (!PyList_CheckExact(events) || i < 0 || every < 0) {
        PyErr_SetString(PyExc_TypeError, "replay_run(replayer, list, i >= 0, every >= 0)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(events);
    if (i >= n) return PyLong_FromSsize_t(i);
    rb_t b;
    int rc = rb_setup(&b, args[0]);
    if (rc <= 0) {
        rb_release(&b);
        if (rc < 0) return NULL;
        PyErr_Clear(); /* not a replay the batch mirrors: the handlers take it all */
        return PyLong_FromSsize_t(i);
    }
    Py_INCREF(events);
    b.events = events;
    for (; i < PyList_GET_SIZE(events); i++) {
        PyObject *ev = PyList_GET_ITEM(events, i);
        /* Replayer.before: the progress bar's tick, the next purge behind, timed state */
        if (every && i % every == 0) break;
        if (b.purge_index >= 0 && b.purge_index < i) {
            rc = rb_next_purge(&b, i);
            if (rc <= 0) break;
        }
        PyTypeObject *t = Py_TYPE(ev);
        int kind = t == ev_alloc_t ? 0 : t == ev_free_t ? 1 : -1;
        if (kind < 0) break; /* a purge (or an event of another class) */
        PyObject *ts_o = SLOT(ev, off_hdr[kind][4]);
        double ts;
        if (!rb_float(ts_o, &ts)) break;
        if ((b.armed_set && ts >= b.armed) || (b.held_set && b.held_min <= ts) ||
            (!b.pending_none && b.done_set && ts >= b.done0))
            break;
        Py_INCREF(ev);
        rc = kind == 0 ? rb_alloc(&b, ev) : rb_free(&b, ev, ts_o);
        Py_DECREF(ev);
        if (rc <= 0) break;
        b.n_events++;
        b.index = (long)i;
    }
    rc = rc < 0 ? -1 : 0;
    if (rb_finish(&b) < 0) rc = -1;
    rb_release(&b);
    return rc < 0 ? NULL : PyLong_FromSsize_t(i);
}

/* seed_busy(space, start, end, flags) — mirrors TraceHarness.seed_busy (trace/harness.py)
 * when [start, end) lies inside one free block, claim_range's first case (every
 * snapshot area, most adopted addresses): va_clip it out of the block, a new VmapArea
 * with `flags`, insert_vmap_area. Returns the busy area, or None (nothing changed) for
 * the reference: another class or policy, explain recording (free.why), values past
 * 64 bits, a range not inside one free block. */
static PyObject *rb_seed_busy(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "seed_busy takes 4 arguments");
        return NULL;
    }
    PyObject *space = args[0], *start_o = args[1], *end_o = args[2], *flags_o = args[3];
    ctx_t c;
    int rc = ctx_get(space, &c);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    PyObject *result = NULL, *va = NULL;
    grave_t g;
    g.n = 0;
    uint64_t start, end, s = 0, e = 0;
    PyObject *fits = PyDict_GetItemWithError(c.stats_d, s_fits);
    if (PyDict_GetItemWithError(c.free_d, s_why) != Py_None || !fits || !PyList_CheckExact(fits) ||
        PyList_GET_SIZE(fits) < 5 || !u64_of(start_o, &start) || !u64_of(end_o, &end) ||
        end <= start || !PyLong_CheckExact(flags_o))
        goto fallback;
    /* FreeTree.pvm_find_va_enclose_addr(start) */
    PyObject *node = get_node(c.root, off_root), *blk = NULL;
    while (node != NULL) {
        uint64_t ns, ne;
        if (Py_TYPE(node) != va_type || !va_bounds(node, &ns, &ne)) goto fallback;
        if (ns <= start) {
            blk = node;
            s = ns;
            e = ne;
            if (ne >= start) break;
            node = get_node(node, off_right);
        } else
            node = get_node(node, off_left);
    }
    if (blk == NULL || !(s <= start && end <= e)) goto fallback; /* claim_range's other cases */
    /* --- commit: va_clip(block, start, end - start) --- */
    int delta = 0;
    PyObject *lva = NULL, *other = NULL;
    Py_INCREF(blk);
    int fit = clip_core(&g, c.root, blk, s, e, start_o, start, end - start, fits, &delta, &lva,
                        &other);
    flush(&g);
    Py_DECREF(blk);
    if (fit > 0 && d_add(c.free_d, s_nr_free, delta) < 0) fit = -1;
    if (fit > 0 && lva != NULL) { /* the NE split's left part overlaps: complain */
        PyObject *r = PyObject_CallMethodObjArgs(c.free, s_complain_overlap, lva, other, NULL);
        if (!r) fit = -1;
        Py_XDECREF(r);
    }
    Py_XDECREF(lva);
    Py_XDECREF(other);
    if (fit <= 0) {
        if (fit == 0) PyErr_SetString(PyExc_RuntimeError, "seed_busy: NOTHING_FIT after checks");
        goto error;
    }
    /* VmapArea(start, end), its flags, insert_vmap_area */
    va = new_va(start_o, end_o);
    if (va == NULL) goto error;
    set_slot(&g, va, off_flags, flags_o);
    Py_ssize_t bi = c.n > 1 ? (Py_ssize_t)((start / c.zone) % (uint64_t)c.n) : 0;
    int linked = busy_link(&g, PyTuple_GET_ITEM(c.busy, bi), va, start, end);
    if (linked < 0) goto error;
    if (linked) {
        set_state(&g, va, st_busy);
        if (d_add(c.space_d, s_nr_busy, 1) < 0) goto error;
    } else { /* an overlap: the reference complains and raises */
        PyObject *r = PyObject_CallMethodOneArg(space, s_insert_vmap_area, va);
        if (!r) goto error;
        Py_DECREF(r);
    }
    result = va;
    va = NULL;
    goto out;
fallback:
    if (PyErr_Occurred()) goto error;
    result = Py_None;
    Py_INCREF(result);
    goto out;
error:
    result = NULL;
out:
    flush(&g);
    Py_XDECREF(va);
    ctx_release(&c);
    return result;
}

/* --- the beliefs' pool walks (trace/beliefs.py), twins of its comprehensions ---------- */

/* An area's va_start / va_end (a new reference): the slot of a VmapArea, else getattr. */
static PyObject *rb_attr(PyObject *va, Py_ssize_t off, int name) {
    if (Py_TYPE(va) == va_type && off >= 0 && SLOT(va, off) != NULL) {
        Py_INCREF(SLOT(va, off));
        return SLOT(va, off);
    }
    return PyObject_GetAttr(va, rb_s[name]);
}

/* The pools dict of a VmapNode-like object (a new reference), or NULL with an error. */
static PyObject *rb_node_pools(PyObject *vn) {
    PyObject *pd = PyObject_GetAttr(vn, s_pools);
    if (pd != NULL && !PyDict_Check(pd)) {
        PyErr_SetString(PyExc_TypeError, "a vmap node's pools must be a dict");
        Py_CLEAR(pd);
    }
    return pd;
}

/* Call fn(arg, node, pool area) for every pooled area, nodes in order, each node's pools in
 * dict order, each pool head first (the order of Beliefs' comprehensions). */
static int rb_each_pooled(PyObject *nodes, int (*fn)(void *, PyObject *, PyObject *), void *arg) {
    PyObject *it = PyObject_GetIter(nodes), *vn;
    if (!it) return -1;
    int rc = 0;
    while (rc == 0 && (vn = PyIter_Next(it)) != NULL) {
        PyObject *pd = rb_node_pools(vn);
        if (!pd) rc = -1;
        Py_ssize_t pos = 0;
        PyObject *key, *pool;
        while (rc == 0 && PyDict_Next(pd, &pos, &key, &pool)) {
            Py_INCREF(pool);
            PyObject *pit = PyObject_GetIter(pool), *va;
            if (!pit) rc = -1;
            while (rc == 0 && (va = PyIter_Next(pit)) != NULL) {
                rc = fn(arg, vn, va);
                Py_DECREF(va);
            }
            if (rc == 0 && PyErr_Occurred()) rc = -1;
            Py_XDECREF(pit);
            Py_DECREF(pool);
        }
        Py_XDECREF(pd);
        Py_DECREF(vn);
    }
    if (rc == 0 && PyErr_Occurred()) rc = -1;
    Py_DECREF(it);
    return rc;
}

typedef struct { PyObject *out, *vn, *id; } rb_ranges_t;

static int rb_add_range(void *arg, PyObject *vn, PyObject *va) {
    rb_ranges_t *a = arg;
    if (vn != a->vn) { /* vn.id, once per node */
        Py_XDECREF(a->id);
        a->vn = vn;
        if (!(a->id = PyObject_GetAttr(vn, rb_s[RB_ID]))) return -1;
    }
    PyObject *s = rb_attr(va, off_start, RB_VA_START), *e = rb_attr(va, off_end, RB_VA_END);
    PyObject *t = s && e ? PyTuple_Pack(3, s, e, a->id) : NULL;
    int rc = t ? PySet_Add(a->out, t) : -1;
    Py_XDECREF(s);
    Py_XDECREF(e);
    Py_XDECREF(t);
    return rc;
}

/* pool_ranges(nodes) -> {(va.va_start, va.va_end, vn.id) for every pooled area} */
static PyObject *rb_pool_ranges(PyObject *self, PyObject *nodes) {
    if (rb_strings() < 0) return NULL;
    rb_ranges_t a = {PySet_New(NULL), NULL, NULL};
    if (a.out && rb_each_pooled(nodes, rb_add_range, &a) < 0) Py_CLEAR(a.out);
    Py_XDECREF(a.id);
    return a.out;
}

/* gen.get(id(o), 0), borrowed (NULL with an error set on failure) */
static PyObject *rb_gen_of(PyObject *gen, PyObject *o) {
    PyObject *id = PyLong_FromVoidPtr(o);
    if (!id) return NULL;
    PyObject *g = PyDict_GetItemWithError(gen, id);
    Py_DECREF(id);
    if (g == NULL && !PyErr_Occurred()) g = small_zero;
    return g;
}

/* a < b (op Py_LT) or a == b (Py_EQ) for ints: C longs when both fit, else Python. */
static inline int rb_cmp(PyObject *a, PyObject *b, int op) {
    if (PyLong_CheckExact(a) && PyLong_CheckExact(b)) {
        int oa = 0, ob = 0;
        long x = PyLong_AsLongAndOverflow(a, &oa), y = PyLong_AsLongAndOverflow(b, &ob);
        if (!oa && !ob && !PyErr_Occurred()) return op == Py_LT ? x < y : x == y;
        PyErr_Clear();
    }
    return PyObject_RichCompareBool(a, b, op);
}

/* insert_by_purge_order(pool, va, gen): Beliefs._insert_by_purge_order — va goes before
 * the first area of an older purge, or of the same purge and a lower start; else last. */
static PyObject *rb_insert_by_purge_order(PyObject *self, PyObject *const *args,
                                          Py_ssize_t nargs) {
    if (nargs != 3 || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "insert_by_purge_order(pool, va, gen)");
        return NULL;
    }
    if (rb_strings() < 0) return NULL;
    PyObject *pool = args[0], *va = args[1], *gen = args[2];
    PyObject *g = rb_gen_of(gen, va), *start = NULL, *it = NULL, *other;
    if (!g) return NULL;
    Py_INCREF(g);
    start = rb_attr(va, off_start, RB_VA_START);
    it = start ? PyObject_GetIter(pool) : NULL;
    Py_ssize_t i = 0;
    int found = 0, err = it == NULL;
    while (!err && !found && (other = PyIter_Next(it)) != NULL) {
        PyObject *og = rb_gen_of(gen, other);
        int lt = og ? rb_cmp(og, g, Py_LT) : -1;
        if (lt == 0) { /* og == g and other.va_start < va.va_start */
            int eq = rb_cmp(og, g, Py_EQ);
            if (eq > 0) {
                PyObject *os = rb_attr(other, off_start, RB_VA_START);
                lt = os ? rb_cmp(os, start, Py_LT) : -1;
                Py_XDECREF(os);
            } else
                lt = eq;
        }
        Py_DECREF(other);
        if (lt < 0) err = 1;
        else if (lt) found = 1;
        else i++;
    }
    if (!err && PyErr_Occurred()) err = 1;
    Py_XDECREF(it);
    Py_XDECREF(start);
    Py_DECREF(g);
    if (err) return NULL;
    PyObject *r = found ? PyObject_CallMethod(pool, "insert", "nO", i, va)
                        : PyObject_CallMethodOneArg(pool, rb_s[RB_APPEND], va);
    if (!r) return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* ranges_below(blk, starts, i, parked, limit): the first `limit` ranges that
 * Beliefs.ranges_below yields, as a list: the free blocks from `blk` down (rb_prev) and
 * the parked blocks parked[starts[i]], parked[starts[i - 1]], ... merged, highest start
 * first (a tree block before a parked one only when its start is higher), each as
 * (va_start, va_end). None (nothing read changes) when a block is not a VmapArea or a
 * parked start is missing: the reference generator runs. */
static PyObject *rb_ranges_below(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "ranges_below(blk, starts, i, parked, limit)");
        return NULL;
    }
    if (rb_strings() < 0 || va_ready() < 0) return NULL;
    PyObject *blk = args[0] == Py_None ? NULL : args[0], *starts = args[1], *parked = args[3];
    if (!PyList_Check(starts) || !PyDict_Check(parked)) Py_RETURN_NONE;
    Py_ssize_t i = PyLong_AsSsize_t(args[2]);
    if (i == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t limit = PyLong_AsSsize_t(args[4]);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    if (i >= PyList_GET_SIZE(starts)) Py_RETURN_NONE;
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    while (PyList_GET_SIZE(out) < limit && (blk != NULL || i >= 0)) {
        PyObject *key;
        if (blk != NULL && (!PyObject_TypeCheck(blk, va_type) || !SLOT(blk, off_start) ||
                            !SLOT(blk, off_end)))
            goto decline;
        int tree = i < 0;
        if (!tree && blk != NULL) {
            tree = PyObject_RichCompareBool(SLOT(blk, off_start),
                                            PyList_GET_ITEM(starts, i), Py_GT);
            if (tree < 0) goto error;
        }
        if (tree) {
            key = PyTuple_Pack(2, SLOT(blk, off_start), SLOT(blk, off_end));
            /* rb_prev(blk) */
            PyObject *n = get_node(blk, off_left);
            if (n != NULL) {
                PyObject *r;
                while ((r = get_node(n, off_right)) != NULL) n = r;
                blk = n;
            } else {
                n = get_node(blk, off_parent);
                while (n != NULL && blk == get_node(n, off_left)) {
                    blk = n;
                    n = get_node(n, off_parent);
                }
                blk = n;
            }
        } else {
            PyObject *va = PyDict_GetItemWithError(parked, PyList_GET_ITEM(starts, i));
            if (va == NULL) {
                if (PyErr_Occurred()) goto error;
                goto decline;
            }
            PyObject *vs = rb_attr(va, off_start, RB_VA_START);
            PyObject *ve = vs ? rb_attr(va, off_end, RB_VA_END) : NULL;
            key = ve ? PyTuple_Pack(2, vs, ve) : NULL;
            Py_XDECREF(vs);
            Py_XDECREF(ve);
            i--;
        }
        if (key == NULL || PyList_Append(out, key) < 0) {
            Py_XDECREF(key);
            goto error;
        }
        Py_DECREF(key);
    }
    return out;
decline:
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_DECREF(out);
    return NULL;
}

/* alloc_index(events, cls): Replayer._indexes' map — for every event of exactly class
 * `cls` whose `failed` is false, its position appended to the list at its `addr` key,
 * in event order. */
static PyObject *rb_alloc_index(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "alloc_index(events: list, cls)");
        return NULL;
    }
    static PyObject *s_failed = NULL, *s_addr = NULL;
    if (!s_failed && !(s_failed = PyUnicode_InternFromString("failed"))) return NULL;
    if (!s_addr && !(s_addr = PyUnicode_InternFromString("addr"))) return NULL;
    PyObject *events = args[0], *out = PyDict_New();
    if (out == NULL) return NULL;
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(events); n++) {
        PyObject *e = PyList_GET_ITEM(events, n);
        if ((PyObject *)Py_TYPE(e) != args[1]) continue;
        Py_INCREF(e);
        PyObject *failed = PyObject_GetAttr(e, s_failed), *addr = NULL, *pos = NULL;
        int bad = failed == NULL ? -1 : PyObject_IsTrue(failed);
        if (bad == 0 && (addr = PyObject_GetAttr(e, s_addr)) != NULL &&
            (pos = PyLong_FromSsize_t(n)) != NULL) {
            PyObject *lst = PyDict_GetItemWithError(out, addr);
            if (lst != NULL)
                bad = PyList_Append(lst, pos);
            else if (PyErr_Occurred())
                bad = -1;
            else {
                lst = PyList_New(1);
                if (lst == NULL)
                    bad = -1;
                else {
                    Py_INCREF(pos);
                    PyList_SET_ITEM(lst, 0, pos);
                    bad = PyDict_SetItem(out, addr, lst);
                    Py_DECREF(lst);
                }
            }
        } else if (bad == 0)
            bad = -1;
        Py_XDECREF(pos);
        Py_XDECREF(addr);
        Py_XDECREF(failed);
        Py_DECREF(e);
        if (bad < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* --- claim_range's scans (TraceHarness.claim_range, helper rtail) ------------------- */

/* Append to out the areas of the iterable items that overlap [start, end), in order; pool
 * (when not NULL) pairs each as (pool, area). 1 done, 0 declined (an item that is not a
 * VmapArea, or bounds past 64 bits: the caller's comprehension runs), -1 error. Reads
 * only. */
static int rt_overlapping(PyObject *items, uint64_t start, uint64_t end, PyObject *pool,
                          PyObject *out) {
    PyObject *it = PyObject_GetIter(items), *va;
    if (!it) return -1;
    int rc = 1;
    uint64_t s, e;
    while (rc == 1 && (va = PyIter_Next(it)) != NULL) {
        if (Py_TYPE(va) != va_type || !va_bounds(va, &s, &e)) rc = 0;
        else if (s < end && start < e) {
            PyObject *x = pool ? PyTuple_Pack(2, pool, va) : Py_NewRef(va);
            if (!x || PyList_Append(out, x) < 0) rc = -1;
            Py_XDECREF(x);
        }
        Py_DECREF(va);
    }
    if (rc == 1 && PyErr_Occurred()) rc = -1;
    Py_DECREF(it);
    return rc;
}

static int rt_args(PyObject *const *args, Py_ssize_t nargs, const char *sig, uint64_t *start,
                   uint64_t *end) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, sig);
        return -1;
    }
    if (va_ready() < 0) return -1;
    return u64_of(args[1], start) && u64_of(args[2], end) ? 1 : 0;
}

/* overlapping(areas, start, end) -> [va for va in areas if va.va_start < end and start <
 * va.va_end], or None (declined: the comprehension runs). */
static PyObject *rt_overlapping_py(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t start, end;
    int rc = rt_args(args, nargs, "overlapping(areas, start, end)", &start, &end);
    if (rc <= 0) return rc < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    rc = rt_overlapping(args[0], start, end, NULL, out);
    if (rc <= 0) Py_DECREF(out);
    return rc < 0 ? NULL : rc == 0 ? Py_NewRef(Py_None) : out;
}

/* pooled_overlapping(nodes, start, end) -> [(pool, va) for vn in nodes for pool in
 * vn.pools.values() for va in pool if va overlaps [start, end)], or None (declined). */
static PyObject *rt_pooled_overlapping(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t start, end;
    int rc = rt_args(args, nargs, "pooled_overlapping(nodes, start, end)", &start, &end);
    if (rc <= 0) return rc < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *out = PyList_New(0), *it = out ? PyObject_GetIter(args[0]) : NULL, *vn;
    if (!it) {
        Py_XDECREF(out);
        return NULL;
    }
    while (rc == 1 && (vn = PyIter_Next(it)) != NULL) {
        PyObject *pd = rb_node_pools(vn), *key, *pool;
        Py_ssize_t pos = 0;
        if (!pd) rc = -1;
        while (rc == 1 && PyDict_Next(pd, &pos, &key, &pool)) {
            Py_INCREF(pool);
            rc = rt_overlapping(pool, start, end, pool, out);
            Py_DECREF(pool);
        }
        Py_XDECREF(pd);
        Py_DECREF(vn);
    }
    if (rc == 1 && PyErr_Occurred()) rc = -1;
    Py_DECREF(it);
    if (rc <= 0) Py_DECREF(out);
    return rc < 0 ? NULL : rc == 0 ? Py_NewRef(Py_None) : out;
}

/* ============================================================ end of replay batch section */


/* =====================================================================================
 * bulk pages section (helper bulkc)
 * ===================================================================================== */

/* The twins of phys/buddy.py's page allocator over its own structures: the buddy free
 * lists (the intrusive lists in each Zone's nxt/prv/free_order dicts, nr_free and
 * free_pages), the pcp deque and the page columns. __rmqueue_smallest + expand,
 * __free_one_page (buddy merging, buddy_merge_likely's tail placement), the pcp
 * refill (rmqueue_bulk) and drain (free_pcppages_bulk), alloc_pages_bulk's chosen-zone
 * path, free_pages_bulk, and the first-zone alloc_pages/free_pages of any order. Each
 * entry point checks, before it changes anything, that the PhysicalMemory and its
 * Zones are the exact classes with none of the methods the twins stand in for
 * replaced (on the class or the instance), that every structure has the type the
 * reference builds, and that the call is the case it mirrors; otherwise it declines
 * and the Python method runs. The dict operations are the reference's, in its order.
 * vmalloc_node_range/vfree (the whole vmalloc/vfree section) use them for multi-page
 * areas, with the PTE fills and clears of PTE tables already cached. */

enum { BZ_NXT, BZ_PRV, BZ_FO, BZ_NR_FREE, BZ_FREE_PAGES, BZ_PCP, BZ_BATCH, BZ_HIGH, BZ_WMARK,
       BZ_LOWMEM, BZ_IDX, BZ_NID, BZ_N };
static const char *bz_names[BZ_N] = {"nxt",   "prv",       "free_order", "nr_free",
                                     "free_pages", "pcp",  "pcp_batch",  "pcp_high",
                                     "wmark", "lowmem_reserve", "idx",   "nid"};
static Py_ssize_t bz_off[BZ_N];
static PyTypeObject *bk_phys_t = NULL, *bk_zone_t = NULL, *bk_deque_t = NULL;
static PyObject *bk_names = NULL, *bk_origs = NULL; /* method names, the originals */
static unsigned int bk_phys_tag = 0;                /* tp_version_tag when last checked */
static PyObject *bk_popleft, *bk_pop, *bk_extend, *bk_extendleft;
static long bk_buddy, bk_pcp, bk_alloc, bk_pgtable, bk_owner_none;
static uint64_t bk_gfp_zero;
#define BK_MAXO 15
static PyObject *bk_sentinel[BK_MAXO + 1]; /* -1 - order: each list's head */
static PyObject *bk_s_fl, *bk_s_od, *bk_s_rc, *bk_s_ow, *bk_s_zn, *bk_s_max_pfn,
    *bk_s_max_order, *bk_s_zones, *bk_s_data, *bk_s_zl_gfp, *bk_s_nr_nodes;

/* init_bulk_pages(PhysicalMemory, Zone, deque, names, originals, PG_BUDDY, PG_PCP,
 * PG_ALLOC, PG_PGTABLE, OWNER_NONE, __GFP_ZERO) */
static PyObject *bk_init(PyObject *self, PyObject *args) {
    PyObject *pt, *zt, *dt, *names, *origs;
    unsigned long long zero;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!lllllK", &PyType_Type, &pt, &PyType_Type, &zt,
                          &PyType_Type, &dt, &PyTuple_Type, &names, &PyTuple_Type, &origs,
                          &bk_buddy, &bk_pcp, &bk_alloc, &bk_pgtable, &bk_owner_none, &zero))
        return NULL;
    if (PyTuple_GET_SIZE(names) != PyTuple_GET_SIZE(origs)) {
        PyErr_SetString(PyExc_ValueError, "names and originals differ in length");
        return NULL;
    }
    bk_gfp_zero = zero;
    for (int i = 0; i < BZ_N; i++)
        if (member_offset((PyTypeObject *)zt, bz_names[i], &bz_off[i]) < 0) return NULL;
    for (int i = 0; i <= BK_MAXO; i++)
        if (!bk_sentinel[i] && !(bk_sentinel[i] = PyLong_FromLong(-1 - i))) return NULL;
#define S(var, text) if (!(var) && !((var) = PyUnicode_InternFromString(text))) return NULL
    S(bk_s_fl, "_fl"); S(bk_s_od, "_od"); S(bk_s_rc, "_rc"); S(bk_s_ow, "_ow");
    S(bk_s_zn, "_zn"); S(bk_s_max_pfn, "max_pfn"); S(bk_s_max_order, "max_order");
    S(bk_s_zones, "zones"); S(bk_s_data, "_data"); S(bk_s_zl_gfp, "_zl_gfp");
    S(bk_s_nr_nodes, "nr_nodes");
#undef S
    PyObject *m[4];
    const char *mn[4] = {"popleft", "pop", "extend", "extendleft"};
    for (int i = 0; i < 4; i++)
        if (!(m[i] = PyObject_GetAttrString(dt, mn[i]))) {
            while (--i >= 0) Py_DECREF(m[i]);
            return NULL;
        }
    Py_XSETREF(bk_popleft, m[0]);
    Py_XSETREF(bk_pop, m[1]);
    Py_XSETREF(bk_extend, m[2]);
    Py_XSETREF(bk_extendleft, m[3]);
    Py_INCREF(pt);
    Py_XSETREF(bk_phys_t, (PyTypeObject *)pt);
    Py_INCREF(zt);
    Py_XSETREF(bk_zone_t, (PyTypeObject *)zt);
    Py_INCREF(dt);
    Py_XSETREF(bk_deque_t, (PyTypeObject *)dt);
    Py_INCREF(names);
    Py_XSETREF(bk_names, names);
    Py_INCREF(origs);
    Py_XSETREF(bk_origs, origs);
    bk_phys_tag = 0;
    Py_RETURN_NONE;
}

/* --- a PhysicalMemory the twins may stand in for ------------------------------------- */
typedef struct {
    PyObject *phys, *d; /* borrowed */
    uint8_t *fl, *zn;
    int8_t *od;
    int32_t *rc, *ow;
    Py_ssize_t n; /* max_pfn (every column holds it) */
    long maxo;
    PyObject *zones, *data; /* borrowed from d */
} bp_t;

static int bk_col(PyObject *d, PyObject *name, Py_ssize_t size, const char *fmts, void **buf,
                  Py_ssize_t *len) {
    PyObject *mv = PyDict_GetItemWithError(d, name);
    if (!mv) return PyErr_Occurred() ? -1 : 0;
    if (!PyMemoryView_Check(mv)) return 0;
    Py_buffer *b = PyMemoryView_GET_BUFFER(mv);
    if (b->readonly || b->ndim != 1 || b->itemsize != size || !b->buf || !b->format ||
        !b->format[0] || b->format[1] || !strchr(fmts, b->format[0]) ||
        (b->strides && b->strides[0] != size))
        return 0;
    *buf = b->buf;
    *len = b->shape[0];
    return 1;
}

static int bk_dll(PyObject *d, PyObject *name, long long *out) {
    PyObject *v = PyDict_GetItemWithError(d, name);
    if (!v) return PyErr_Occurred() ? -1 : 0;
    if (!PyLong_CheckExact(v)) return 0;
    int of;
    *out = PyLong_AsLongLongAndOverflow(v, &of);
    if (*out == -1 && PyErr_Occurred()) return -1;
    return !of;
}

/* The last PhysicalMemory bp_get accepted, and its instance dict's version then (3.11:
 * every change of a dict gives it a new, globally unique version, so an equal version
 * is the same dict unchanged: no method shadowed since, the same columns). */
static bp_t bk_last;
static uint64_t bk_last_tag = 0;

/* 1: phys is a PhysicalMemory the twins mirror (p filled), 0: decline, -1: error. */
static int bp_get(PyObject *phys, bp_t *p) {
    if (!bk_phys_t || Py_TYPE(phys) != bk_phys_t) return 0;
    PyObject **dp = _PyObject_GetDictPtr(phys);
    if (!dp || !*dp) return 0;
    PyObject *d = *dp;
#if PY_VERSION_HEX < 0x030C0000
    uint64_t dtag = ((PyDictObject *)d)->ma_version_tag;
#ifdef Py_TPFLAGS_VALID_VERSION_TAG
    int tvalid = (bk_phys_t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) != 0;
#else
    int tvalid = bk_phys_t->tp_version_tag != 0;
#endif
    if (bk_last_tag && dtag == bk_last_tag && bk_last.phys == phys && bk_last.d == d &&
        tvalid && bk_phys_tag && bk_phys_t->tp_version_tag == bk_phys_tag) {
        *p = bk_last;
        return 1;
    }
#endif
    Py_ssize_t nn = PyTuple_GET_SIZE(bk_names);
    for (Py_ssize_t i = 0; i < nn; i++) /* a method replaced on the instance */
        if (PyDict_GetItemWithError(d, PyTuple_GET_ITEM(bk_names, i)) || PyErr_Occurred())
            return PyErr_Occurred() ? -1 : 0;
#ifdef Py_TPFLAGS_VALID_VERSION_TAG
    int valid = (bk_phys_t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) != 0;
#else
    int valid = bk_phys_t->tp_version_tag != 0;
#endif
    if (!valid || !bk_phys_tag || bk_phys_t->tp_version_tag != bk_phys_tag) {
        for (Py_ssize_t i = 0; i < nn; i++) /* ... or on the class */
            if (_PyType_Lookup(bk_phys_t, PyTuple_GET_ITEM(bk_names, i)) !=
                PyTuple_GET_ITEM(bk_origs, i))
                return 0;
#ifdef Py_TPFLAGS_VALID_VERSION_TAG
        valid = (bk_phys_t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) != 0;
#else
        valid = bk_phys_t->tp_version_tag != 0;
#endif
        bk_phys_tag = valid ? bk_phys_t->tp_version_tag : 0;
    }
    Py_ssize_t l1, l2, l3, l4, l5;
    long long max_pfn, maxo;
    int r;
    if ((r = bk_col(d, bk_s_fl, 1, "B", (void **)&p->fl, &l1)) != 1 ||
        (r = bk_col(d, bk_s_od, 1, "b", (void **)&p->od, &l2)) != 1 ||
        (r = bk_col(d, bk_s_rc, 4, "i", (void **)&p->rc, &l3)) != 1 ||
        (r = bk_col(d, bk_s_ow, 4, "i", (void **)&p->ow, &l4)) != 1 ||
        (r = bk_col(d, bk_s_zn, 1, "B", (void **)&p->zn, &l5)) != 1 ||
        (r = bk_dll(d, bk_s_max_pfn, &max_pfn)) != 1 ||
        (r = bk_dll(d, bk_s_max_order, &maxo)) != 1)
        return r;
    if (max_pfn < 0 || l1 != max_pfn || l2 != max_pfn || l3 != max_pfn || l4 != max_pfn ||
        l5 != max_pfn || maxo < 1 || maxo > BK_MAXO)
        return 0;
    p->zones = PyDict_GetItemWithError(d, bk_s_zones);
    p->data = p->zones ? PyDict_GetItemWithError(d, bk_s_data) : NULL;
    if (!p->data || !PyList_CheckExact(p->zones) || !PyDict_CheckExact(p->data))
        return PyErr_Occurred() ? -1 : 0;
    p->phys = phys;
    p->d = d;
    p->n = (Py_ssize_t)max_pfn;
    p->maxo = (long)maxo;
#if PY_VERSION_HEX < 0x030C0000
    bk_last = *p;
    bk_last_tag = bk_phys_tag ? ((PyDictObject *)d)->ma_version_tag : 0;
#endif
    return 1;
}

/* --- one Zone: its lists and counters ----------------------------------------------- */
typedef struct {
    PyObject *z, *nxt, *prv, *fo, *nrl, *pcp; /* borrowed (the zone's slots) */
    long long nr[BK_MAXO + 1], nr0[BK_MAXO + 1], free_pages, free0;
    long long batch, high;
    int maxo;
} bz_t;

static inline int bk_slot_ll(PyObject *o, int i, long long *out) {
    PyObject *v = SLOT(o, bz_off[i]);
    if (!v || !PyLong_CheckExact(v)) return 0;
    int of;
    *out = PyLong_AsLongLongAndOverflow(v, &of);
    if (*out == -1 && PyErr_Occurred()) return -1;
    return !of;
}

/* 1: a Zone of the exact class with the structures the reference builds, 0, -1 */
static int bz_get(bp_t *p, PyObject *z, bz_t *b) {
    if (Py_TYPE(z) != bk_zone_t) return 0;
    b->z = z;
    b->nxt = SLOT(z, bz_off[BZ_NXT]);
    b->prv = SLOT(z, bz_off[BZ_PRV]);
    b->fo = SLOT(z, bz_off[BZ_FO]);
    b->nrl = SLOT(z, bz_off[BZ_NR_FREE]);
    b->pcp = SLOT(z, bz_off[BZ_PCP]);
    if (!b->nxt || !b->prv || !b->fo || !b->nrl || !b->pcp || !PyDict_CheckExact(b->nxt) ||
        !PyDict_CheckExact(b->prv) || !PyDict_CheckExact(b->fo) || !PyList_CheckExact(b->nrl) ||
        Py_TYPE(b->pcp) != bk_deque_t || PyList_GET_SIZE(b->nrl) != p->maxo + 1)
        return 0;
    int r;
    if ((r = bk_slot_ll(z, BZ_FREE_PAGES, &b->free_pages)) != 1 ||
        (r = bk_slot_ll(z, BZ_BATCH, &b->batch)) != 1 || (r = bk_slot_ll(z, BZ_HIGH, &b->high)) != 1)
        return r;
    b->maxo = (int)p->maxo;
    for (int o = 0; o <= b->maxo; o++) {
        PyObject *v = PyList_GET_ITEM(b->nrl, o);
        if (!PyLong_CheckExact(v)) return 0;
        int of;
        b->nr[o] = b->nr0[o] = PyLong_AsLongLongAndOverflow(v, &of);
        if (b->nr[o] == -1 && PyErr_Occurred()) return -1;
        if (of) return 0;
    }
    b->free0 = b->free_pages;
    return 1;
}

/* Write the counters back (also after an error: they follow the lists changed so far). */
static int bz_put(bz_t *b) {
    int e = 0;
    for (int o = 0; o <= b->maxo; o++) {
        if (b->nr[o] == b->nr0[o]) continue;
        PyObject *v = PyLong_FromLongLong(b->nr[o]);
        if (!v || PyList_SetItem(b->nrl, o, v) < 0) e = -1;
        else b->nr0[o] = b->nr[o];
    }
    if (b->free_pages != b->free0) {
        PyObject *v = PyLong_FromLongLong(b->free_pages);
        if (!v) return -1;
        Py_XSETREF(SLOT(b->z, bz_off[BZ_FREE_PAGES]), v);
        b->free0 = b->free_pages;
    }
    return e;
}

/* d.pop(key): a new reference, or NULL with KeyError(key) as in the reference */
static inline PyObject *bk_dict_pop(PyObject *d, PyObject *key) {
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *r;
    int x = PyDict_Pop(d, key, &r);
    if (x == 0) PyErr_SetObject(PyExc_KeyError, key);
    return x > 0 ? r : NULL;
#else
    return _PyDict_Pop(d, key, NULL);
#endif
}

/* An int value of a free-list dict as a long long (-1 with an error set if not one) */
static inline int bk_as_ll(PyObject *v, long long *out) {
    int of = 0;
    *out = PyLong_Check(v) ? PyLong_AsLongLongAndOverflow(v, &of) : -1;
    if (!PyLong_Check(v) || of) {
        PyErr_SetString(PyExc_TypeError, "free list entry is not a 64-bit int");
        return -1;
    }
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* Zone.remove(pfn) with pfn's key object: the dict operations of the reference */
static int bz_remove_k(bz_t *b, PyObject *key) {
    PyObject *o = bk_dict_pop(b->fo, key), *n = NULL, *p = NULL;
    int r = -1;
    long long ov;
    if (!o || !(n = bk_dict_pop(b->nxt, key)) || !(p = bk_dict_pop(b->prv, key))) goto out;
    if (PyDict_SetItem(b->nxt, p, n) < 0 || PyDict_SetItem(b->prv, n, p) < 0) goto out;
    if (bk_as_ll(o, &ov) < 0) goto out;
    if (ov < 0 || ov > b->maxo) {
        PyErr_SetString(PyExc_IndexError, "free block order out of range");
        goto out;
    }
    b->nr[ov] -= 1;
    b->free_pages -= 1LL << ov;
    r = 0;
out:
    Py_XDECREF(o);
    Py_XDECREF(n);
    Py_XDECREF(p);
    return r;
}
/* Zone.add_head / Zone.add_tail with pfn's key object */
static int bz_add_k(bz_t *b, PyObject *key, int o, int tail) {
    PyObject *s = bk_sentinel[o], *x;
    PyObject *first = tail ? b->prv : b->nxt, *second = tail ? b->nxt : b->prv;
    x = PyDict_GetItemWithError(first, s);
    if (!x) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "free list head missing");
        return -1;
    }
    Py_INCREF(x);
    int e = PyDict_SetItem(first, s, key) < 0 || PyDict_SetItem(first, key, x) < 0 ||
            PyDict_SetItem(second, key, s) < 0 || PyDict_SetItem(second, x, key) < 0;
    Py_DECREF(x);
    if (e) return -1;
    PyObject *ov = PyLong_FromLong(o);
    if (!ov) return -1;
    e = PyDict_SetItem(b->fo, key, ov);
    Py_DECREF(ov);
    if (e < 0) return -1;
    b->nr[o] += 1;
    b->free_pages += 1LL << o;
    return 0;
}
static int bz_add(bz_t *b, long long pfn, int o, int tail) {
    PyObject *key = PyLong_FromLongLong(pfn);
    if (!key) return -1;
    int r = bz_add_k(b, key, o, tail);
    Py_DECREF(key);
    return r;
}

static inline int bk_in(bp_t *p, long long pfn) {
    if (pfn >= 0 && pfn < p->n) return 1;
    PyErr_Format(PyExc_IndexError, "pfn %lld outside the page columns", pfn);
    return 0;
}

/* _rmqueue_smallest: the pfn, -1 (no block large enough: nothing changed), -2 (error) */
static long long bk_rmqueue_smallest(bp_t *p, bz_t *b, int order) {
    for (int cur = order; cur <= b->maxo; cur++) {
        PyObject *head = PyDict_GetItemWithError(b->nxt, bk_sentinel[cur]);
        long long pfn;
        if (!head) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "free list head missing");
            return -2;
        }
        if (bk_as_ll(head, &pfn) < 0) return -2;
        if (pfn < 0) continue;
        if (!bk_in(p, pfn)) return -2;
        Py_INCREF(head);
        int e = bz_remove_k(b, head);
        Py_DECREF(head);
        if (e < 0) return -2;
        p->fl[pfn] &= (uint8_t)~bk_buddy;
        while (cur > order) {
            cur--;
            long long half = pfn + (1LL << cur);
            if (!bk_in(p, half) || bz_add(b, half, cur, 0) < 0) return -2;
            p->fl[half] |= (uint8_t)bk_buddy;
            p->od[half] = (int8_t)cur;
        }
        return pfn;
    }
    return -1;
}

/* free_order.get(pfn) == order, with pfn's new key in *key: 1, 0, -1 */
static int bk_free_at(bz_t *b, long long pfn, long long order, PyObject **key) {
    *key = PyLong_FromLongLong(pfn);
    if (!*key) return -1;
    PyObject *v = PyDict_GetItemWithError(b->fo, *key);
    if (!v) return PyErr_Occurred() ? -1 : 0;
    long long x;
    if (bk_as_ll(v, &x) < 0) return -1;
    return x == order;
}

/* _free_one_page(z, pfn, order): 0 or -1 */
static int bk_free_one_page(bp_t *p, bz_t *b, long long pfn, int order) {
    long long buddy = pfn;
    int r, to_tail = 0;
    PyObject *key = NULL;
    while (order < b->maxo) {
        buddy = pfn ^ (1LL << order);
        r = bk_free_at(b, buddy, order, &key);
        if (r <= 0) {
            Py_XDECREF(key);
            if (r < 0) return -1;
            break;
        }
        r = bk_in(p, buddy) ? bz_remove_k(b, key) : -1;
        Py_DECREF(key);
        if (r < 0) return -1;
        p->fl[buddy] &= (uint8_t)~bk_buddy;
        pfn &= buddy;
        order++;
    }
    if (!bk_in(p, pfn)) return -1;
    p->fl[pfn] |= (uint8_t)bk_buddy;
    p->od[pfn] = (int8_t)order;
    if (order < b->maxo - 1) { /* buddy_merge_likely() */
        long long higher = buddy & pfn;
        r = bk_free_at(b, higher ^ (1LL << (order + 1)), order + 1, &key);
        Py_XDECREF(key);
        if (r < 0) return -1;
        to_tail = r;
    }
    return bz_add(b, pfn, order, to_tail);
}

static inline Py_ssize_t bk_len(PyObject *dq) { return PyObject_Size(dq); }

/* The pcp refill of _rmqueue(z, 0) (rmqueue_bulk): up to batch pages off the buddy
 * lists, PG_pcp set, appended to the pcp list. The count (0: nothing changed), -1. */
static Py_ssize_t bk_refill(bp_t *p, bz_t *b, long long *tmp, Py_ssize_t cap) {
    Py_ssize_t k = 0;
    for (long long i = 0; i < b->batch && k < cap; i++) {
        long long pfn = bk_rmqueue_smallest(p, b, 0);
        if (pfn == -2) return -1;
        if (pfn < 0) break;
        p->fl[pfn] |= (uint8_t)bk_pcp;
        tmp[k++] = pfn;
    }
    return k;
}

/* pcp.extend(pfns) or pcp.extendleft(pfns) in one call */
static int bk_dq_extend(PyObject *meth, PyObject *dq, const long long *pfns, Py_ssize_t n) {
    if (n <= 0) return 0;
    PyObject *t = PyTuple_New(n);
    if (!t) return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLongLong(pfns[i]);
        if (!v) {
            Py_DECREF(t);
            return -1;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    PyObject *r = call2(meth, dq, t);
    Py_DECREF(t);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

/* pcp.popleft() / pcp.pop() as a pfn inside the columns; -1 on error */
static long long bk_dq_take(bp_t *p, PyObject *meth, PyObject *dq) {
    PyObject *v = call1(meth, dq);
    if (!v) return -1;
    long long pfn = PyLong_Check(v) ? PyLong_AsLongLong(v) : -1;
    Py_DECREF(v);
    if (pfn == -1 && PyErr_Occurred()) return -1;
    if (!bk_in(p, pfn)) return -1;
    return pfn;
}

/* _prep_new_page(pfn, 0, gfp) after the pcp pop (PG_pcp cleared) */
static int bk_prep0(bp_t *p, long long pfn, uint64_t gfp) {
    p->fl[pfn] = (uint8_t)((p->fl[pfn] & ~bk_pcp) | bk_alloc);
    p->od[pfn] = 0;
    p->rc[pfn] = 1;
    p->ow[pfn] = (int32_t)bk_owner_none;
    if (gfp & bk_gfp_zero && PyDict_GET_SIZE(p->data)) {
        PyObject *key = PyLong_FromLongLong(pfn);
        if (!key) return -1;
        int r = PyDict_DelItem(p->data, key);
        Py_DECREF(key);
        if (r < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) return -1;
            PyErr_Clear();
        }
    }
    return 0;
}

/* free_pcppages_bulk after a free brought the pcp list to pcp_high: min(batch, len)
 * pages off the tail back to the buddy lists. */
static int bk_drain(bp_t *p, bz_t *b) {
    Py_ssize_t len = bk_len(b->pcp);
    if (len < 0) return -1;
    long long k = b->batch < len ? b->batch : len;
    for (long long i = 0; i < k; i++) {
        long long pfn = bk_dq_take(p, bk_pop, b->pcp);
        if (pfn < 0) return -1;
        p->fl[pfn] &= (uint8_t)~bk_pcp;
        if (bk_free_one_page(p, b, pfn, 0) < 0) return -1;
    }
    return 0;
}

/* (zones, highest) = phys._zl_gfp[(nid, gfp)] (the memo); 1, 0 (not memoised), -1 */
static int bk_zones(bp_t *p, PyObject *nid, uint64_t gfp, PyObject **zones, long long *highest) {
    PyObject *zl = PyDict_GetItemWithError(p->d, bk_s_zl_gfp);
    if (!zl || !PyDict_CheckExact(zl)) return PyErr_Occurred() ? -1 : 0;
    PyObject *g = PyLong_FromUnsignedLongLong(gfp);
    PyObject *key = g ? PyTuple_Pack(2, nid, g) : NULL;
    Py_XDECREF(g);
    if (!key) return -1;
    PyObject *zh = PyDict_GetItemWithError(zl, key);
    Py_DECREF(key);
    if (!zh) return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_CheckExact(zh) || PyTuple_GET_SIZE(zh) != 2 ||
        !PyList_CheckExact(PyTuple_GET_ITEM(zh, 0)) || !PyLong_CheckExact(PyTuple_GET_ITEM(zh, 1)))
        return 0;
    int of;
    *highest = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(zh, 1), &of);
    if (*highest == -1 && PyErr_Occurred()) return -1;
    if (of || *highest < 0 || *highest > 3) return 0;
    *zones = PyTuple_GET_ITEM(zh, 0);
    return 1;
}

/* zone.wmark[i] + zone.lowmem_reserve[j] without the free-area check: 1, 0, -1 */
static int bk_mark(PyObject *z, long long wi, long long lj, long long *out) {
    PyObject *wm = SLOT(z, bz_off[BZ_WMARK]), *lr = SLOT(z, bz_off[BZ_LOWMEM]);
    if (!wm || !lr || !PyList_CheckExact(wm) || !PyList_CheckExact(lr) || wi >= PyList_GET_SIZE(wm) ||
        lj >= PyList_GET_SIZE(lr))
        return 0;
    PyObject *a = PyList_GET_ITEM(wm, wi), *c = PyList_GET_ITEM(lr, lj);
    if (!PyLong_CheckExact(a) || !PyLong_CheckExact(c)) return 0;
    int o1, o2;
    long long x = PyLong_AsLongLongAndOverflow(a, &o1), y = PyLong_AsLongLongAndOverflow(c, &o2);
    if (PyErr_Occurred()) return -1;
    if (o1 || o2 || x > LLONG_MAX / 4 || y > LLONG_MAX / 4 || x < 0 || y < 0) return 0;
    *out = x + y;
    return 1;
}

static long long bk_alloc_pages(bp_t *p, uint64_t gfp, int order, PyObject *nid);

/* alloc_pages_bulk(gfp, nid, nr, out) with `populated` entries already in out, for the
 * chosen-zone path (more than one page wanted, a zone of the first node passes the low
 * watermark plus nr, and it gives at least one page): the pages taken (written to
 * pages[0..]), -2 (declined: the fall-back single allocation or a case not mirrored;
 * nothing changed) or -1 (error). */
static Py_ssize_t bk_alloc_bulk(bp_t *p, uint64_t gfp, PyObject *nid, long long nr,
                                long long populated, long long *pages) {
    long long want = nr - populated, highest;
    if (nr <= 0 || want <= 0) return 0;
    if (want == 1) goto single;
    PyObject *zones;
    int r = bk_zones(p, nid, gfp, &zones, &highest);
    if (r != 1) return r < 0 ? -1 : -2;
    long long nr_nodes;
    if ((r = bk_dll(p->d, bk_s_nr_nodes, &nr_nodes)) != 1) return r < 0 ? -1 : -2;
    Py_ssize_t nz = PyList_GET_SIZE(zones);
    PyObject *pref = nz ? PyList_GET_ITEM(zones, 0) : NULL, *chosen = NULL;
    long long pref_nid = 0, hidx = highest;
    if (pref) {
        if (Py_TYPE(pref) != bk_zone_t) return -2;
        if ((r = bk_slot_ll(pref, BZ_NID, &pref_nid)) != 1 ||
            (r = bk_slot_ll(pref, BZ_IDX, &hidx)) != 1)
            return r < 0 ? -1 : -2;
        if (hidx < 0 || hidx > 3) return -2;
    }
    for (Py_ssize_t i = 0; i < nz; i++) {
        PyObject *z = PyList_GET_ITEM(zones, i);
        long long znid, free, mark;
        if (Py_TYPE(z) != bk_zone_t) return -2;
        if ((r = bk_slot_ll(z, BZ_NID, &znid)) != 1) return r < 0 ? -1 : -2;
        if (nr_nodes > 1 && znid != pref_nid) break;
        /* zone_watermark_ok(z, 0, z.wmark[WMARK_LOW] + nr, pref.idx, 0) */
        if ((r = bk_slot_ll(z, BZ_FREE_PAGES, &free)) != 1 || (r = bk_mark(z, 1, hidx, &mark)) != 1)
            return r < 0 ? -1 : -2;
        if (nr > LLONG_MAX / 4) return -2;
        if (free > mark + nr) {
            chosen = z;
            break;
        }
    }
    if (!chosen) goto single;
    bz_t b;
    if ((r = bz_get(p, chosen, &b)) != 1) return r < 0 ? -1 : -2;
    long long *tmp = PyMem_Malloc(sizeof(long long) * (size_t)(b.batch > 0 ? b.batch : 1));
    if (!tmp) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t got = 0;
    int err = 0;
    while (got < want) {
        Py_ssize_t len = bk_len(b.pcp);
        if (len < 0) {
            err = 1;
            break;
        }
        if (len > 0) {
            Py_ssize_t take = want - got < len ? (Py_ssize_t)(want - got) : len;
            for (Py_ssize_t i = 0; i < take; i++) {
                long long pfn = bk_dq_take(p, bk_popleft, b.pcp);
                if (pfn < 0) {
                    err = 1;
                    break;
                }
                pages[got++] = pfn;
            }
            if (err) break;
            continue;
        }
        /* _rmqueue(z, 0) on an empty pcp list: the refill, then its head; the loop
         * above takes the rest (the list keeps what is not wanted) */
        Py_ssize_t k = bk_refill(p, &b, tmp, (Py_ssize_t)b.batch);
        if (k < 0) {
            err = 1;
            break;
        }
        if (k == 0) break; /* (got > 0 here or nothing changed) */
        Py_ssize_t t = want - got < k ? (Py_ssize_t)(want - got) : k;
        for (Py_ssize_t i = 0; i < t; i++) pages[got++] = tmp[i];
        if (bk_dq_extend(bk_extend, b.pcp, tmp + t, k - t) < 0) {
            err = 1;
            break;
        }
    }
    PyMem_Free(tmp);
    for (Py_ssize_t i = 0; i < got && !err; i++)
        if (bk_prep0(p, pages[i], gfp) < 0) err = 1;
    if (bz_put(&b) < 0) err = 1;
    if (err) return -1;
    if (got) return got;
single: /* one ordinary allocation: alloc_pages(gfp, 0, nid) (nothing changed so far) */
    {
        long long pfn = bk_alloc_pages(p, gfp, 0, nid);
        if (pfn < 0) return pfn == -1 ? -1 : -2; /* (-2: its slow path, the method's) */
        pages[0] = pfn;
        return 1;
    }
}

/* free_pages_bulk(pfns) (with free_pages(pfn, 0) for one page): every page a distinct
 * allocated order-0 page with one reference, not a page table, all in one zone; then
 * the columns, the pcp list filled at its head and drained whenever it reaches
 * pcp_high. 1 done, 0 declined (nothing changed), -1 error. */
static int bk_free_bulk(bp_t *p, const long long *pf, Py_ssize_t n) {
    if (n <= 0) return 0;
    int z0 = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        long long q = pf[i];
        if (q < 0 || q >= p->n || (p->fl[q] & (bk_alloc | bk_pgtable)) != bk_alloc ||
            p->od[q] != 0 || p->rc[q] != 1)
            return 0;
        if (z0 < 0) z0 = p->zn[q];
        else if (p->zn[q] != z0) return 0;
    }
    if (z0 >= PyList_GET_SIZE(p->zones)) return 0;
    bz_t b;
    int r = bz_get(p, PyList_GET_ITEM(p->zones, z0), &b);
    if (r != 1) return r;
    if (b.high < 1 || b.batch < 1) return 0;
    for (Py_ssize_t i = 0; i < n; i++) { /* distinct: a second visit sees the 0 */
        if (p->rc[pf[i]] != 1) {
            for (Py_ssize_t j = 0; j < i; j++) p->rc[pf[j]] = 1;
            return 0;
        }
        p->rc[pf[i]] = 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long long q = pf[i];
        p->ow[q] = (int32_t)bk_owner_none;
        p->fl[q] = (uint8_t)((p->fl[q] & ~bk_alloc) | bk_pcp);
    }
    Py_ssize_t i = 0;
    int err = 0;
    while (i < n) {
        Py_ssize_t len = bk_len(b.pcp);
        if (len < 0) {
            err = 1;
            break;
        }
        long long room = b.high - len;
        Py_ssize_t k = room > 1 ? (Py_ssize_t)(room < n - i ? room : n - i) : 1;
        if (bk_dq_extend(bk_extendleft, b.pcp, pf + i, k) < 0) {
            err = 1;
            break;
        }
        i += k;
        if (len + k >= b.high && bk_drain(p, &b) < 0) {
            err = 1;
            break;
        }
    }
    if (bz_put(&b) < 0) err = 1;
    return err ? -1 : 1;
}

/* alloc_pages(gfp, order, nid) when the first zone of the zonelist serves it on the
 * fast path: order 0 from the pcp list (a refill when it is empty), a higher order off
 * the buddy lists (the first zone passing the low watermark and the free-area check).
 * The pfn (>= 0), -2 (declined: the slow path, nothing changed), -1 (error). */
static long long bk_alloc_pages(bp_t *p, uint64_t gfp, int order, PyObject *nid) {
    if (order < 0 || order > p->maxo) return -2;
    PyObject *zones;
    long long highest, pfn = -1;
    int r = bk_zones(p, nid, gfp, &zones, &highest);
    if (r != 1) return r < 0 ? -1 : -2;
    Py_ssize_t nz = PyList_GET_SIZE(zones);
    for (Py_ssize_t i = 0; i < nz; i++) {
        PyObject *z = PyList_GET_ITEM(zones, i);
        long long free, mark;
        if (Py_TYPE(z) != bk_zone_t) return -2;
        if ((r = bk_slot_ll(z, BZ_FREE_PAGES, &free)) != 1 || (r = bk_mark(z, 1, highest, &mark)) != 1)
            return r < 0 ? -1 : -2;
        if (free - ((1LL << order) - 1) <= mark) {
            if (order == 0 && i == 0) return -2; /* (its order-0 fast path's miss) */
            continue;
        }
        bz_t b;
        if ((r = bz_get(p, z, &b)) != 1) return r < 0 ? -1 : -2;
        if (order > 0) {
            int any = 0;
            for (int o = order; o <= b.maxo; o++) any |= b.nr[o] != 0;
            if (!any) continue;
            pfn = bk_rmqueue_smallest(p, &b, order);
        } else {
            if (i != 0) return -2;
            Py_ssize_t len = bk_len(b.pcp);
            if (len < 0) return -1;
            if (len == 0) {
                long long *tmp = PyMem_Malloc(sizeof(long long) * (size_t)(b.batch > 0 ? b.batch : 1));
                if (!tmp) {
                    PyErr_NoMemory();
                    return -1;
                }
                Py_ssize_t k = bk_refill(p, &b, tmp, (Py_ssize_t)b.batch);
                if (k > 0 && bk_dq_extend(bk_extend, b.pcp, tmp, k) < 0) k = -1;
                PyMem_Free(tmp);
                if (k < 0) {
                    bz_put(&b);
                    return -1;
                }
                if (k == 0) return -2; /* nothing changed: the method's general loop */
            }
            pfn = bk_dq_take(p, bk_popleft, b.pcp);
            if (pfn >= 0) p->fl[pfn] &= (uint8_t)~bk_pcp;
            else pfn = -2;
        }
        if (bz_put(&b) < 0 || pfn == -2) return -1;
        if (pfn < 0) continue; /* (cannot happen: nr_free said a block is there) */
        /* _prep_new_page(pfn, order, gfp) */
        p->fl[pfn] |= (uint8_t)bk_alloc;
        p->od[pfn] = (int8_t)order;
        p->rc[pfn] = 1;
        p->ow[pfn] = (int32_t)bk_owner_none;
        if (gfp & bk_gfp_zero && PyDict_GET_SIZE(p->data)) {
            for (long long q = pfn; q < pfn + (1LL << order); q++) {
                PyObject *key = PyLong_FromLongLong(q);
                if (!key) return -1;
                int e = PyDict_DelItem(p->data, key);
                Py_DECREF(key);
                if (e < 0) {
                    if (!PyErr_ExceptionMatches(PyExc_KeyError)) return -1;
                    PyErr_Clear();
                }
            }
        }
        return pfn;
    }
    return -2;
}

/* free_pages(pfn, order) of an allocated block with one reference, not a page table:
 * 1 done, 0 declined (nothing changed), -1 error. */
static int bk_free_pages(bp_t *p, long long pfn, int order) {
    if (order == 0) return bk_free_bulk(p, &pfn, 1);
    if (pfn < 0 || pfn >= p->n || order < 0 || order > p->maxo) return 0;
    if ((p->fl[pfn] & (bk_alloc | bk_pgtable)) != bk_alloc || p->od[pfn] != order ||
        p->rc[pfn] != 1 || p->zn[pfn] >= PyList_GET_SIZE(p->zones))
        return 0;
    bz_t b;
    int r = bz_get(p, PyList_GET_ITEM(p->zones, p->zn[pfn]), &b);
    if (r != 1) return r;
    p->rc[pfn] = 0;
    p->od[pfn] = 0;
    p->ow[pfn] = (int32_t)bk_owner_none;
    p->fl[pfn] &= (uint8_t)~bk_alloc;
    int e = bk_free_one_page(p, &b, pfn, order);
    if (bz_put(&b) < 0) e = -1;
    return e < 0 ? -1 : 1;
}

/* --- Python entry points (phys/buddy.py calls them first) ---------------------------- */

/* phys_alloc_pages_bulk(phys, gfp, nid, nr, out_list) -> count | None (declined) */
static PyObject *bk_py_alloc_bulk(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "phys_alloc_pages_bulk takes 5 arguments");
        return NULL;
    }
    PyObject *out = args[4];
    uint64_t gfp;
    long long nr;
    int of;
    if (!PyList_CheckExact(out) || !PyLong_CheckExact(args[1]) || !PyLong_CheckExact(args[2]) ||
        !PyLong_CheckExact(args[3]) || vw_u64(args[1], &gfp) != 1)
        goto decline;
    nr = PyLong_AsLongLongAndOverflow(args[3], &of);
    if (PyErr_Occurred()) return NULL;
    if (of || nr > (1LL << 40)) goto decline;
    long long pop = PyList_GET_SIZE(out);
    if (nr - pop < 1) goto decline;
    bp_t p;
    int r = bp_get(args[0], &p);
    if (r != 1) {
        if (r < 0) return NULL;
        goto decline;
    }
    long long *pages = PyMem_Malloc(sizeof(long long) * (size_t)(nr - pop));
    if (!pages) return PyErr_NoMemory();
    Py_ssize_t got = bk_alloc_bulk(&p, gfp, args[2], nr, pop, pages);
    if (got == -2) {
        PyMem_Free(pages);
        goto decline;
    }
    int e = got < 0;
    for (Py_ssize_t i = 0; i < got && !e; i++) {
        PyObject *v = PyLong_FromLongLong(pages[i]);
        if (!v || PyList_Append(out, v) < 0) e = 1;
        Py_XDECREF(v);
    }
    PyMem_Free(pages);
    if (e) return NULL;
    return PyLong_FromLongLong(pop + got);
decline:
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* phys_free_pages_bulk(phys, pfns) -> True | None (declined) */
static PyObject *bk_py_free_bulk(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "phys_free_pages_bulk takes 2 arguments");
        return NULL;
    }
    PyObject *lst = args[1];
    if (!PyList_CheckExact(lst) || PyList_GET_SIZE(lst) == 0) Py_RETURN_NONE;
    bp_t p;
    int r = bp_get(args[0], &p);
    if (r != 1) {
        if (r < 0) return NULL;
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyList_GET_SIZE(lst);
    long long *pf = PyMem_Malloc(sizeof(long long) * (size_t)n);
    if (!pf) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyList_GET_ITEM(lst, i);
        int of = 1;
        pf[i] = PyLong_CheckExact(v) ? PyLong_AsLongLongAndOverflow(v, &of) : -1;
        if (of || pf[i] < 0) {
            PyErr_Clear();
            PyMem_Free(pf);
            Py_RETURN_NONE;
        }
    }
    r = bk_free_bulk(&p, pf, n);
    PyMem_Free(pf);
    if (r < 0) return NULL;
    if (r) Py_RETURN_TRUE;
    Py_RETURN_NONE;
}


/* alloc_pages(gfp, order, nid) / free_pages(pfn, order) for the whole vmalloc/vfree:
 * the pfn (new int) or Py_None (declined, nothing changed) or NULL; 1, 0 or -1. */
static PyObject *bk_alloc_page_obj(PyObject *phys, uint64_t gfp, int order, PyObject *nid) {
    bp_t p;
    int r = bp_get(phys, &p);
    if (r != 1) return r < 0 ? NULL : Py_NewRef(Py_None);
    long long pfn = bk_alloc_pages(&p, gfp, order, nid);
    if (pfn == -1) return NULL;
    if (pfn == -2) return Py_NewRef(Py_None);
    return PyLong_FromLongLong(pfn);
}
static int bk_free_page_obj(PyObject *phys, PyObject *pfn_o, int order) {
    bp_t p;
    int r = bp_get(phys, &p);
    if (r != 1) return r;
    if (!PyLong_CheckExact(pfn_o)) return 0;
    int of;
    long long pfn = PyLong_AsLongLongAndOverflow(pfn_o, &of);
    if (pfn == -1 && PyErr_Occurred()) return -1;
    if (of) return 0;
    return bk_free_pages(&p, pfn, order);
}

/* --- PageTables: the class and the methods the PTE twins stand in for -------------- */
static PyTypeObject *bk_pgt_t = NULL;
static PyObject *bk_pgt_names = NULL, *bk_pgt_origs = NULL;
static PyObject *bk_s_pmd_shift, *bk_s_pte_entries, *bk_s_pte_mask, *bk_s_ptecache;
static unsigned int bk_pgt_tag = 0;

/* init_bulk_ptes(PageTables, names, originals) */
static PyObject *bk_init_ptes(PyObject *self, PyObject *args) {
    PyObject *t, *names, *origs;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyType_Type, &t, &PyTuple_Type, &names, &PyTuple_Type,
                          &origs))
        return NULL;
    if (PyTuple_GET_SIZE(names) != PyTuple_GET_SIZE(origs)) {
        PyErr_SetString(PyExc_ValueError, "names and originals differ in length");
        return NULL;
    }
#define S(var, text) if (!(var) && !((var) = PyUnicode_InternFromString(text))) return NULL
    S(bk_s_pmd_shift, "pmd_shift"); S(bk_s_pte_entries, "pte_entries");
    S(bk_s_pte_mask, "supported_pte_mask"); S(bk_s_ptecache, "_ptecache");
#undef S
    Py_INCREF(t);
    Py_XSETREF(bk_pgt_t, (PyTypeObject *)t);
    Py_INCREF(names);
    Py_XSETREF(bk_pgt_names, names);
    Py_INCREF(origs);
    Py_XSETREF(bk_pgt_origs, origs);
    bk_pgt_tag = 0;
    Py_RETURN_NONE;
}

/* 1: pgt is a PageTables with none of the twinned methods replaced; 0: not; -1 */
static int bk_pgt_plain(PyObject *pgt) {
    if (!bk_pgt_t || Py_TYPE(pgt) != bk_pgt_t) return 0;
    PyObject **dp = _PyObject_GetDictPtr(pgt);
    Py_ssize_t nn = PyTuple_GET_SIZE(bk_pgt_names);
    if (dp && *dp)
        for (Py_ssize_t i = 0; i < nn; i++)
            if (PyDict_GetItemWithError(*dp, PyTuple_GET_ITEM(bk_pgt_names, i)) || PyErr_Occurred())
                return PyErr_Occurred() ? -1 : 0;
#ifdef Py_TPFLAGS_VALID_VERSION_TAG
    int valid = (bk_pgt_t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) != 0;
#else
    int valid = bk_pgt_t->tp_version_tag != 0;
#endif
    if (!valid || !bk_pgt_tag || bk_pgt_t->tp_version_tag != bk_pgt_tag) {
        for (Py_ssize_t i = 0; i < nn; i++)
            if (_PyType_Lookup(bk_pgt_t, PyTuple_GET_ITEM(bk_pgt_names, i)) !=
                PyTuple_GET_ITEM(bk_pgt_origs, i))
                return 0;
#ifdef Py_TPFLAGS_VALID_VERSION_TAG
        valid = (bk_pgt_t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) != 0;
#else
        valid = bk_pgt_t->tp_version_tag != 0;
#endif
        bk_pgt_tag = valid ? bk_pgt_t->tp_version_tag : 0;
    }
    return 1;
}

/* --- the whole vmalloc/vfree's multi-page steps --------------------------------------- */

/* An int64 page array's buffer (C-contiguous, 1-D): 1, 0 (another layout), -1 */
static int bk_pages_buf(PyObject *pages, Py_buffer *pb) {
    if (PyObject_GetBuffer(pages, pb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        return 0;
    }
    if (pb->itemsize != 8 || pb->ndim != 1 || !pb->format || !pb->format[0] || pb->format[1] ||
        !strchr("lqLQ", pb->format[0])) {
        PyBuffer_Release(pb);
        return 0;
    }
    return 1;
}

/* vm_area_alloc_pages(gfp, nid, 0, nr) for nr > 1 (Vmalloc.vm_area_alloc_pages' order-0
 * loop): chunks of at most 100 through alloc_pages_bulk (its chosen-zone path here, else
 * the method), stopping at a short chunk, then single alloc_pages; the page array (new
 * reference), Py_None when declined (the method replaced; nothing changed), NULL. */
static PyObject *bk_vm_area_alloc_pages(wctx_t *c, uint64_t gfp, PyObject *nid, uint64_t nr) {
    if (nr < 2 || nr > (1u << 20) ||
        vw_shadowed_o(c, c->self, WS(W_VM_AREA_ALLOC_PAGES), O_VM_AREA_ALLOC_PAGES))
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    bp_t p;
    int r = bp_get(c->phys, &p);
    if (r != 1) return r < 0 ? NULL : Py_NewRef(Py_None);
    long long *buf = PyMem_Malloc(sizeof(long long) * (size_t)nr);
    if (!buf) return PyErr_NoMemory();
    PyObject *g = PyLong_FromUnsignedLongLong(gfp), *res = NULL;
    if (!g) goto out;
    Py_ssize_t got = 0;
    int use_c = 1;
    while ((uint64_t)got < nr) {
        long long req = nr - (uint64_t)got < 100 ? (long long)(nr - (uint64_t)got) : 100;
        Py_ssize_t n = use_c ? bk_alloc_bulk(&p, gfp, nid, req, 0, buf + got) : -2;
        if (n == -1) goto out;
        if (n == -2) { /* phys.alloc_pages_bulk(gfp, nid, req, chunk): the method */
            PyObject *chunk = PyList_New(0), *rq = PyLong_FromLongLong(req);
            PyObject *x = NULL;
            if (chunk && rq) {
                PyObject *a[5] = {c->phys, g, nid, rq, chunk};
                x = vw_meth(WS(W_ALLOC_PAGES_BULK), a, 5, NULL);
            }
            Py_XDECREF(rq);
            n = x ? PyLong_AsSsize_t(x) : -1;
            Py_XDECREF(x);
            if (n == -1 && PyErr_Occurred()) {
                Py_XDECREF(chunk);
                goto out;
            }
            if (n != PyList_GET_SIZE(chunk) || n > req) {
                Py_DECREF(chunk);
                PyErr_SetString(PyExc_RuntimeError, "alloc_pages_bulk: count differs");
                goto out;
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                buf[got + i] = PyLong_AsLongLong(PyList_GET_ITEM(chunk, i));
                if (buf[got + i] == -1 && PyErr_Occurred()) {
                    Py_DECREF(chunk);
                    goto out;
                }
            }
            Py_DECREF(chunk);
            if ((r = bp_get(c->phys, &p)) < 0) goto out; /* (Python ran: look again) */
            use_c = r == 1;
        }
        got += n;
        if (n != req) break;
    }
    while ((uint64_t)got < nr) { /* then one page at a time: alloc_pages(gfp, 0, nid) */
        long long pfn = use_c ? bk_alloc_pages(&p, gfp, 0, nid) : -2;
        if (pfn == -1) goto out;
        if (pfn == -2) {
            PyObject *a[4] = {c->phys, g, small_zero, nid};
            PyObject *x = vw_meth(WS(W_ALLOC_PAGES), a, 4, NULL);
            if (!x) goto out;
            if (x == Py_None) {
                Py_DECREF(x);
                break;
            }
            pfn = PyLong_AsLongLong(x);
            Py_DECREF(x);
            if (pfn == -1 && PyErr_Occurred()) goto out;
            if ((r = bp_get(c->phys, &p)) < 0) goto out;
            use_c = r == 1;
        }
        buf[got++] = pfn;
    }
    {
        PyObject *n_o = PyLong_FromSsize_t(got);
        if (!n_o) goto out;
        PyObject *e[2] = {n_o, vw_np_int64};
        res = PyObject_Vectorcall(vw_np_empty, e, 1, vw_kw_dtype);
        Py_DECREF(n_o);
        if (!res) goto out;
        Py_buffer pb;
        int ok = bk_pages_buf(res, &pb);
        if (ok == 1 && (pb.len != (Py_ssize_t)(got * 8) || pb.readonly)) {
            PyBuffer_Release(&pb);
            ok = 0;
        }
        if (ok != 1) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "np.empty: unexpected array");
            Py_CLEAR(res);
            goto out;
        }
        if (got) memcpy(pb.buf, buf, (size_t)got * 8);
        PyBuffer_Release(&pb);
    }
out:
    Py_XDECREF(g);
    PyMem_Free(buf);
    return res;
}

/* map_pages(addr, pages, prot, PAGE_SHIFT) for several small pages when every PTE table
 * the range needs is cached and every slot is empty: the entries written, 1. 0: decline
 * (nothing changed; the method allocates tables, WARNs on a busy slot). -1: error. */
static int bk_map_ptes(PyObject *pgt, uint64_t addr, PyObject *pages, uint64_t prot) {
    uint64_t shift, ents, mask;
    int r, res = 0;
    if (addr & 4095) return 0;
    if ((r = bk_pgt_plain(pgt)) != 1) return r;
    if ((r = vw_attr_u64(pgt, bk_s_pmd_shift, &shift)) != 1 || (r = vw_attr_u64(pgt, bk_s_pte_entries, &ents)) != 1 ||
        (r = vw_attr_u64(pgt, bk_s_pte_mask, &mask)) != 1)
        return r;
    if (shift >= 63 || shift < 12 || ents == 0 || (ents & (ents - 1))) return 0;
    Py_buffer pb, tb[8];
    int nt = 0;
    if (bk_pages_buf(pages, &pb) != 1) return 0;
    PyObject *cache = PyObject_GetAttr(pgt, bk_s_ptecache);
    if (!cache) {
        PyBuffer_Release(&pb);
        return -1;
    }
    Py_ssize_t n = pb.shape[0], i = 0;
    const uint64_t *pf = pb.buf;
    Py_ssize_t idxs[8], ks[8];
    if (!PyDict_CheckExact(cache) || n < 1 || addr + ((uint64_t)n << 12) < addr) goto out;
    while (i < n) {
        uint64_t a = addr + ((uint64_t)i << 12);
        if (nt == 8) goto out;
        PyObject *key = PyLong_FromUnsignedLongLong(a >> shift);
        if (!key) goto error;
        PyObject *tbl = PyDict_GetItemWithError(cache, key);
        Py_DECREF(key);
        if (!tbl) {
            if (PyErr_Occurred()) goto error;
            goto out;
        }
        if (vm_buf(tbl, &tb[nt], 8) < 0) {
            PyErr_Clear();
            goto out;
        }
        nt++;
        Py_ssize_t idx = (Py_ssize_t)((a >> 12) & (ents - 1));
        Py_ssize_t k = n - i < (Py_ssize_t)ents - idx ? n - i : (Py_ssize_t)ents - idx;
        if (idx + k > tb[nt - 1].shape[0]) goto out;
        const uint64_t *t = (const uint64_t *)tb[nt - 1].buf + idx;
        for (Py_ssize_t j = 0; j < k; j++)
            if (t[j]) goto out; /* a busy slot: the method WARNs */
        idxs[nt - 1] = idx;
        ks[nt - 1] = k;
        i += k;
    }
    {
        uint64_t pv = prot & mask;
        Py_ssize_t j0 = 0;
        for (int s = 0; s < nt; s++) {
            uint64_t *t = (uint64_t *)tb[s].buf + idxs[s];
            for (Py_ssize_t j = 0; j < ks[s]; j++) t[j] = (pf[j0 + j] << 12) | pv;
            j0 += ks[s];
        }
    }
    res = 1;
    goto out;
error:
    res = -1;
out:
    for (int s = 0; s < nt; s++) PyBuffer_Release(&tb[s]);
    PyBuffer_Release(&pb);
    Py_DECREF(cache);
    return res;
}

/* unmap(addr, size) across PMDs when every PTE table of the range is cached (its
 * general loop, each table's slots cleared): 1. 0: decline (a table to look up, absent
 * or huge: the method). -1: error. */
static int bk_unmap_cached(PyObject *pgt, uint64_t addr, uint64_t size) {
    uint64_t shift, ents;
    int r;
    if (size == 0 || addr + size < addr) return 0;
    if ((r = bk_pgt_plain(pgt)) != 1) return r;
    if ((r = vw_attr_u64(pgt, bk_s_pmd_shift, &shift)) != 1 || (r = vw_attr_u64(pgt, bk_s_pte_entries, &ents)) != 1)
        return r;
    if (shift >= 63 || shift < 12 || ents == 0 || (ents & (ents - 1))) return 0;
    uint64_t end = addr + size, pmd = (uint64_t)1 << shift;
    if (((end - 1) >> shift) - (addr >> shift) >= 8) return 0;
    PyObject *cache = PyObject_GetAttr(pgt, bk_s_ptecache);
    if (!cache) return -1;
    int res = 0;
    if (!PyDict_CheckExact(cache)) goto out;
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t a = addr; a < end;) {
            uint64_t nxt = (a | (pmd - 1)) + 1;
            if (nxt > end || nxt == 0) nxt = end;
            PyObject *key = PyLong_FromUnsignedLongLong(a >> shift);
            if (!key) goto error;
            PyObject *tbl = PyDict_GetItemWithError(cache, key);
            Py_DECREF(key);
            if (!tbl) {
                if (PyErr_Occurred()) goto error;
                goto out;
            }
            Py_buffer b;
            if (vm_buf(tbl, &b, 8) < 0) {
                PyErr_Clear();
                goto out;
            }
            if (pass) {
                Py_ssize_t i0 = (Py_ssize_t)((a >> 12) & (ents - 1));
                Py_ssize_t i1 = i0 + (Py_ssize_t)((nxt - a + 4095) >> 12);
                if (i1 > b.shape[0]) i1 = b.shape[0];
                if (i0 < i1) memset((uint64_t *)b.buf + i0, 0, (size_t)(i1 - i0) * 8);
            }
            PyBuffer_Release(&b);
            a = nxt;
        }
    }
    res = 1;
    goto out;
error:
    res = -1;
out:
    Py_DECREF(cache);
    return res;
}

/* phys.free_pages_bulk(pages.tolist()) for vfree's page array: 1 done, 0 declined
 * (nothing changed), -1 error. */
static int bk_vfree_pages(PyObject *phys, PyObject *pages, uint64_t nr) {
    bp_t p;
    int r = bp_get(phys, &p);
    if (r != 1) return r;
    Py_buffer pb;
    if (bk_pages_buf(pages, &pb) != 1) return 0;
    r = 0;
    if ((uint64_t)pb.shape[0] == nr) r = bk_free_bulk(&p, (const long long *)pb.buf, (Py_ssize_t)nr);
    PyBuffer_Release(&pb);
    return r;
}

/* --- kmalloc's new slab and kfree's last object for slabs of order >= 1 -------------- */
/* (the test-vmalloc section's twins cover order 0; a pages array of 257..4096 bytes
 * lives in a kmalloc-512..4k cache whose slabs are order 1..3, made and destroyed with
 * the area when it is the cache's only object) */
static PyObject *bk_s_order, *bk_s_slabs, *bk_s_new_free_map, *bk_s_slab_pages,
    *bk_s_page_address, *bk_s_switch;
static int bk_slab_strings(void) {
    if (bk_s_switch) return 0;
#define S(var, text) if (!((var) = PyUnicode_InternFromString(text))) return -1
    S(bk_s_order, "order"); S(bk_s_slabs, "slabs"); S(bk_s_new_free_map, "new_free_map");
    S(bk_s_slab_pages, "slab_pages"); S(bk_s_page_address, "page_address");
    S(bk_s_switch, "_c_slab_pages");
#undef S
    return 0;
}
#define BK_OWNER_SLAB 5 /* slab.OWNER_SLAB */

static PyObject *bk_slab_dict(wctx_t *c, PyObject *name, int o) {
    PyObject *sa = c->slab, *sa_d;
    if (bk_slab_strings() < 0) return NULL;
    if ((PyObject *)Py_TYPE(sa) != PyTuple_GET_ITEM(c->consts, WC_SLAB_TYPE) ||
        !(sa_d = vw_idict(sa)) || vw_shadowed_o(c, sa, name, o))
        return NULL;
    PyObject *sw = PyDict_GetItemWithError(sa_d, bk_s_switch);
    return sw == Py_True ? sa_d : NULL;
}

/* SlabAllocator.kmalloc(size, gfp, node) when the size's cache (memoised) has no partial
 * slab and its slabs are of order >= 1: the address (new int); Py_None: declined,
 * nothing changed; NULL: error. */
static PyObject *bk_kmalloc_new_slab(wctx_t *c, PyObject *size_o, uint64_t gfp, PyObject *node) {
    PyObject *sa_d, *sc, *cache, *cache_d, *partial, *slabs, *nfm, *ps, *pfn_o = NULL;
    PyObject *slab = NULL, *fm = NULL, *addr = NULL, *res = NULL;
    long long order, csize, objects, spages;
    int r;
    bp_t p;
    if (!(sa_d = bk_slab_dict(c, WS(W_KMALLOC), O_KMALLOC))) goto maybe_error;
    sc = PyDict_GetItemWithError(sa_d, WS(W_SIZE_CACHE));
    if (!sc || !PyDict_CheckExact(sc)) goto maybe_error;
    cache = PyDict_GetItemWithError(sc, size_o);
    if (!cache || (PyObject *)Py_TYPE(cache) != PyTuple_GET_ITEM(c->consts, WC_CACHE_CLS) ||
        !(cache_d = vw_idict(cache)))
        goto maybe_error;
    partial = PyDict_GetItemWithError(cache_d, WS(W_PARTIAL));
    slabs = partial ? PyDict_GetItemWithError(cache_d, bk_s_slabs) : NULL;
    nfm = slabs ? PyDict_GetItemWithError(cache_d, bk_s_new_free_map) : NULL;
    ps = nfm ? PyDict_GetItemWithError(sa_d, WS(W_PAGE_SLAB)) : NULL;
    if (!ps || !PyList_CheckExact(partial) || PyList_GET_SIZE(partial) != 0 ||
        !PyDict_CheckExact(slabs) || !PyBytes_CheckExact(nfm) || !PyDict_CheckExact(ps))
        goto maybe_error;
    if ((r = vw_dll(cache_d, bk_s_order, &order)) != 1 ||
        (r = vw_dll(cache_d, WS(W_SIZE), &csize)) != 1 ||
        (r = vw_dll(cache_d, WS(W_OBJECTS), &objects)) != 1 ||
        (r = vw_dll(sa_d, bk_s_slab_pages, &spages)) != 1)
        goto r_decline;
    if (order < 1 || order > 10 || objects <= 0 || PyBytes_GET_SIZE(nfm) != objects) goto decline;
    if ((r = bp_get(c->phys, &p)) != 1) goto r_decline;
    Py_INCREF(cache);
    /* state changes from here: pfn = phys.alloc_pages(gfp & lowmem, order, node) */
    long long pfn = bk_alloc_pages(&p, gfp & ~(c->highmem | c->zero), (int)order, node);
    if (pfn == -1) goto error_c;
    if (pfn == -2) { /* (the slow path: the method; nothing changed) */
        Py_DECREF(cache);
        goto decline;
    }
    {
        long long nr = 1LL << order;
        if (pfn + nr > p.n) {
            PyErr_SetString(PyExc_IndexError, "slab pages outside the owner column");
            goto error_c;
        }
        for (long long q = pfn; q < pfn + nr; q++) p.ow[q] = BK_OWNER_SLAB; /* set_owner */
        pfn_o = PyLong_FromLongLong(pfn);
        if (!pfn_o) goto error_c;
        PyObject *ord = PyDict_GetItemWithError(cache_d, bk_s_order);
        PyObject *sz = ord ? PyDict_GetItemWithError(cache_d, WS(W_SIZE)) : NULL;
        PyObject *ob = sz ? PyDict_GetItemWithError(cache_d, WS(W_OBJECTS)) : NULL;
        if (!ob) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "order");
            goto error_c;
        }
        PyObject *a[4] = {pfn_o, ord, sz, ob};
        slab = PyObject_Vectorcall(PyTuple_GET_ITEM(c->consts, WC_SLAB_CLS), a, 4, NULL);
        if (!slab) goto error_c;
        /* slab.addr = self._addr(pfn): page_address(), the direct map for lowmem */
        uint64_t po, mlp;
        if (vw_attr_u64(c->phys, WS(W_PAGE_OFFSET), &po) == 1 &&
            vw_attr_u64(c->phys, WS(W_MAX_LOW_PFN), &mlp) == 1 && (uint64_t)pfn < mlp &&
            mlp < ((uint64_t)1 << 52) && po + (mlp << 12) >= po) {
            addr = PyLong_FromUnsignedLongLong(po + ((uint64_t)pfn << 12));
        } else if (!PyErr_Occurred()) {
            PyObject *pa[2] = {c->phys, pfn_o}; /* (its ValueError for highmem) */
            addr = PyObject_VectorcallMethod(bk_s_page_address, pa, 2, NULL);
        }
        if (!addr || PyObject_SetAttr(slab, WS(W_ADDR), addr) < 0) goto error_c;
        fm = PyByteArray_FromObject(nfm);
        if (!fm || PyObject_SetAttr(slab, WS(W_FREE_MAP), fm) < 0) goto error_c;
        if (PyDict_SetItem(slabs, pfn_o, slab) < 0 || PyList_Append(partial, slab) < 0)
            goto error_c;
        for (long long q = pfn; q < pfn + nr; q++) {
            PyObject *k = PyLong_FromLongLong(q);
            if (!k || PyDict_SetItem(ps, k, slab) < 0) {
                Py_XDECREF(k);
                goto error_c;
            }
            Py_DECREF(k);
        }
        if (vw_dset(sa_d, bk_s_slab_pages, spages + nr) < 0) goto error_c;
    }
    Py_DECREF(cache);
    /* the object, from the new partial slab: the usual-case twin or the method */
    res = vw_kmalloc(c, size_o, gfp);
    if (res == Py_None) {
        Py_DECREF(res);
        PyObject *g = PyLong_FromUnsignedLongLong(gfp);
        if (!g) goto error;
        PyObject *a[4] = {c->slab, size_o, g, node};
        res = vw_meth(WS(W_KMALLOC), a, 4, NULL);
        Py_DECREF(g);
    }
    goto out;
r_decline:
    if (r < 0) goto error;
    goto decline;
maybe_error:
    if (PyErr_Occurred()) goto error;
decline:
    res = Py_NewRef(Py_None);
    goto out;
error_c:
    Py_DECREF(cache);
error:
    res = NULL;
out:
    Py_XDECREF(pfn_o);
    Py_XDECREF(slab);
    Py_XDECREF(fm);
    Py_XDECREF(addr);
    return res;
}

/* SlabAllocator.kfree(addr) of the last live object of a slab of any order up to 10
 * (order 0: test-vmalloc's vm_structs; 1..3: the pages arrays of multi-page areas): 1
 * (freed, the slab destroyed, its pages freed); 0: declined, nothing changed; -1: error. */
static int bk_kfree_last(wctx_t *c, PyObject *addr_o) {
    PyObject *sa_d, *ps, *slab, *slab_d, *free, *fmap, *caches, *cache, *cache_d, *partial;
    PyObject *slabs, *spfn, *key = NULL;
    int r;
    uint64_t addr, po, mlp, saddr;
    long long ssize, objects, inuse, a_o, s_b, order, spages, pfn;
    if (!(sa_d = bk_slab_dict(c, WS(W_KFREE), O_KFREE))) return PyErr_Occurred() ? -1 : 0;
    if ((r = vw_u64(addr_o, &addr)) != 1) return r;
    if (addr <= 16) return 0;
    if ((r = vw_attr_u64(c->phys, WS(W_PAGE_OFFSET), &po)) != 1 ||
        (r = vw_attr_u64(c->phys, WS(W_MAX_LOW_PFN), &mlp)) != 1)
        return r;
    if (addr < po || mlp >= ((uint64_t)1 << 52) || addr - po >= (mlp << 12)) return 0;
    ps = PyDict_GetItemWithError(sa_d, WS(W_PAGE_SLAB));
    if (!ps || !PyDict_CheckExact(ps)) return PyErr_Occurred() ? -1 : 0;
    key = PyLong_FromUnsignedLongLong((addr - po) >> 12);
    if (!key) return -1;
    slab = PyDict_GetItemWithError(ps, key);
    Py_DECREF(key);
    if (!slab || (PyObject *)Py_TYPE(slab) != PyTuple_GET_ITEM(c->consts, WC_SLAB_CLS) ||
        !(slab_d = vw_idict(slab)))
        return PyErr_Occurred() ? -1 : 0;
    if ((r = vw_dll(slab_d, WS(W_SIZE), &ssize)) != 1 ||
        (r = vw_du64(slab_d, WS(W_ADDR), &saddr)) != 1 ||
        (r = vw_dll(slab_d, WS(W_OBJECTS), &objects)) != 1 ||
        (r = vw_dll(slab_d, WS(W_INUSE), &inuse)) != 1 ||
        (r = vw_dll(slab_d, bk_s_order, &order)) != 1 ||
        (r = vw_dll(slab_d, WS(W_PFN), &pfn)) != 1 ||
        (r = vw_dll(sa_d, bk_s_slab_pages, &spages)) != 1)
        return r;
    if (ssize <= 0 || addr < saddr || addr - saddr > (uint64_t)LLONG_MAX || order < 0 ||
        order > 10 || inuse != 1 || pfn < 0)
        return 0;
    long long d = (long long)(addr - saddr), idx = d / ssize, nr = 1LL << order;
    if (d % ssize || idx >= objects) return 0;
    free = PyDict_GetItemWithError(slab_d, WS(W_SFREE));
    fmap = free ? PyDict_GetItemWithError(slab_d, WS(W_FREE_MAP)) : NULL;
    if (!fmap || !PyList_CheckExact(free) || !PyByteArray_CheckExact(fmap) ||
        idx >= PyByteArray_GET_SIZE(fmap) || PyByteArray_AS_STRING(fmap)[idx])
        return PyErr_Occurred() ? -1 : 0;
    caches = PyDict_GetItemWithError(sa_d, WS(W_CACHES));
    if (!caches || !PyDict_CheckExact(caches)) return PyErr_Occurred() ? -1 : 0;
    PyObject *sz = PyDict_GetItemWithError(slab_d, WS(W_SIZE));
    cache = sz ? PyDict_GetItemWithError(caches, sz) : NULL;
    if (!cache || (PyObject *)Py_TYPE(cache) != PyTuple_GET_ITEM(c->consts, WC_CACHE_CLS) ||
        !(cache_d = vw_idict(cache)))
        return PyErr_Occurred() ? -1 : 0;
    partial = PyDict_GetItemWithError(cache_d, WS(W_PARTIAL));
    slabs = partial ? PyDict_GetItemWithError(cache_d, bk_s_slabs) : NULL;
    spfn = PyDict_GetItemWithError(slab_d, WS(W_PFN));
    if (!slabs || !spfn || !PyList_CheckExact(partial) || !PyDict_CheckExact(slabs))
        return PyErr_Occurred() ? -1 : 0;
    if ((r = vw_dll(cache_d, WS(W_ACTIVE_OBJS), &a_o)) != 1 ||
        (r = vw_dll(sa_d, WS(W_SLAB_BYTES), &s_b)) != 1)
        return r;
    int was_full = inuse == objects;
    Py_ssize_t at = -1;
    for (Py_ssize_t i = PyList_GET_SIZE(partial) - 1; i >= 0; i--)
        if (PyList_GET_ITEM(partial, i) == slab) {
            at = i;
            break;
        }
    if ((at < 0) == !was_full) return 0;
    if (PyDict_GetItemWithError(slabs, spfn) != slab) return PyErr_Occurred() ? -1 : 0;
    for (long long q = pfn; q < pfn + nr; q++) { /* every page maps to the slab */
        PyObject *k = PyLong_FromLongLong(q);
        if (!k) return -1;
        PyObject *v = PyDict_GetItemWithError(ps, k);
        Py_DECREF(k);
        if (v != slab) return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *i_o = PyLong_FromLongLong(idx);
    if (!i_o) return -1;
    Py_INCREF(slab);
    Py_INCREF(spfn);
    Py_INCREF(free);
    Py_INCREF(partial);
    /* state changes from here, in the reference's order */
    int e = 0;
    if (was_full) {
        at = PyList_GET_SIZE(partial);
        e = PyList_Append(partial, slab);
    }
    if (e == 0) e = PyList_Append(free, i_o);
    if (e == 0) {
        PyByteArray_AS_STRING(fmap)[idx] = 1;
        e = vw_dset(slab_d, WS(W_INUSE), 0);
    }
    if (e == 0) e = vw_dset(cache_d, WS(W_ACTIVE_OBJS), a_o - 1);
    if (e == 0) e = vw_dset(sa_d, WS(W_SLAB_BYTES), s_b - ssize);
    if (e == 0) e = PyList_SetSlice(partial, at, at + 1, NULL);
    if (e == 0) e = PyDict_DelItem(slabs, spfn);
    for (long long q = pfn; q < pfn + nr && e == 0; q++) {
        PyObject *k = PyLong_FromLongLong(q);
        e = k ? PyDict_DelItem(ps, k) : -1;
        Py_XDECREF(k);
    }
    if (e == 0) e = vw_dset(sa_d, bk_s_slab_pages, spages - nr);
    if (e == 0) { /* phys.free_pages(spfn, order): its twin, else the method */
        bp_t p;
        int done = order == 0 ? vw_free_page0(c, spfn) : bp_get(c->phys, &p);
        if (done == 1 && order != 0) done = bk_free_pages(&p, pfn, (int)order);
        if (done < 0) e = -1;
        if (done == 0) {
            PyObject *o_o = PyLong_FromLongLong(order);
            PyObject *a[3] = {c->phys, spfn, o_o};
            PyObject *x = o_o ? vw_meth(WS(W_FREE_PAGES), a, 3, NULL) : NULL;
            Py_XDECREF(o_o);
            if (!x) e = -1;
            Py_XDECREF(x);
        }
    }
    Py_DECREF(i_o);
    Py_DECREF(slab);
    Py_DECREF(spfn);
    Py_DECREF(free);
    Py_DECREF(partial);
    return e < 0 ? -1 : 1;
}



/* pte_map_cached(pgt, addr, pages, prot) -> True | None: PageTables.map_pages(addr, pages,
 * prot, PAGE_SHIFT) for an int64/uint64 page array whose PTE tables are all cached
 * and whose slots are all empty (else None: nothing changed) */
static PyObject *bk_py_map(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "pte_map_cached takes 4 arguments");
        return NULL;
    }
    uint64_t addr, prot;
    if (vw_u64(args[1], &addr) != 1 || vw_u64(args[3], &prot) != 1) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    int r = bk_map_ptes(args[0], addr, args[2], prot);
    if (r < 0) return NULL;
    if (r) Py_RETURN_TRUE;
    Py_RETURN_NONE;
}

/* pte_clear_cached(pgt, addr, size) -> True | None: PageTables.unmap(addr, size) when
 * every PTE table of the range is cached (else None: nothing changed) */
static PyObject *bk_py_unmap(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "pte_clear_cached takes 3 arguments");
        return NULL;
    }
    uint64_t addr, size;
    if (vw_u64(args[1], &addr) != 1 || vw_u64(args[2], &size) != 1) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    int r = bk_unmap_cached(args[0], addr, size);
    if (r < 0) return NULL;
    if (r) Py_RETURN_TRUE;
    Py_RETURN_NONE;
}

/* ============================================================== end of bulk pages section */


/* =====================================================================================
 * test-vmalloc harness section (helper tvharness)
 *
 * tv_loops runs whole loops of test_vmalloc's allocate/store/free cases for one worker
 * (workloads/test_vmalloc.py: the loops of fix_size_alloc_test, full_fit_alloc_test and
 * long_busy_list_alloc_test), doing per loop exactly what the Python worker does: the
 * k allocations (Worker.vmalloc: the call, the free-tree descent cost, _charge), the
 * one-byte stores (Worker.write: the translation through the page tables, the physical
 * write, its cost) and the k frees (Worker.vfree: the call, _charge), in that order.
 * vmalloc()/vfree() are the compiled whole operations of the vmalloc/vfree section when
 * the Python side says they are the ones Vmalloc.vmalloc/vfree would call, with the
 * Python method run whenever they decline (as Vmalloc.vmalloc/vfree do); otherwise the
 * Python methods. The store reads the PTE from the page tables' PTE-table cache, as
 * PageTables.translate does first, and calls translate for anything else; the byte goes
 * to the page's contents as PhysicalMemory.write stores one byte. The worker's clock and
 * step count, the run's seen purge/walk counters and the RCU model's call count live in
 * C locals for the batch and are written back on every exit. It stops after the first
 * allocation that returns 0 (the case's failure branch is Python's).
 * ===================================================================================== */

enum { TV_WORKER, TV_RUN, TV_VM, TV_VMALLOC, TV_VFREE, TV_C_VMALLOC, TV_C_VFREE, TV_CPU,
       TV_CALLER, TV_GFP, TV_SPACE, TV_TREE, TV_WALKS, TV_COSTS, TV_RCU, TV_PTECACHE,
       TV_PMD_SHIFT, TV_PTE_ENTRIES, TV_PFN_MASK, TV_TRANSLATE, TV_DATA, TV_MAX_PFN,
       TV_FAST_STORE, TV_PHYS_WRITE, TV_BYTES, TV_N };
enum { TC_CALL, TC_PAGE, TC_WRITE, TC_WALK, TC_TREE_LEVEL, TC_PURGE_AREA, TC_N };

static PyObject *tv_s_clock, *tv_s_steps, *tv_s_seen_purged, *tv_s_seen_walk, *tv_s_calls,
    *tv_s_interval, *tv_s_complete_gp, *tv_s_stats, *tv_s_purged_areas, *tv_s_walk_steps,
    *tv_s_nr_free;

static int tv_init_strings(void) {
    if (tv_s_clock) return 0;
    tv_s_clock = PyUnicode_InternFromString("clock");
    tv_s_steps = PyUnicode_InternFromString("steps");
    tv_s_seen_purged = PyUnicode_InternFromString("seen_purged");
    tv_s_seen_walk = PyUnicode_InternFromString("seen_walk");
    tv_s_calls = PyUnicode_InternFromString("_calls");
    tv_s_interval = PyUnicode_InternFromString("interval");
    tv_s_complete_gp = PyUnicode_InternFromString("_complete_gp");
    tv_s_stats = PyUnicode_InternFromString("stats");
    tv_s_purged_areas = PyUnicode_InternFromString("purged_areas");
    tv_s_walk_steps = PyUnicode_InternFromString("walk_steps");
    tv_s_nr_free = PyUnicode_InternFromString("nr_free");
    if (!tv_s_clock || !tv_s_steps || !tv_s_seen_purged || !tv_s_seen_walk || !tv_s_calls ||
        !tv_s_interval || !tv_s_complete_gp || !tv_s_stats || !tv_s_purged_areas ||
        !tv_s_walk_steps || !tv_s_nr_free)
        return -1;
    return 0;
}

/* An int attribute that fits a long long: 1, 0 (not an exact int, or too big), -1 error. */
static int tv_get_ll(PyObject *o, PyObject *name, long long *out) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (!v) return -1;
    int r = 0;
    if (PyLong_CheckExact(v)) {
        int of;
        *out = PyLong_AsLongLongAndOverflow(v, &of);
        r = (*out == -1 && PyErr_Occurred()) ? -1 : !of;
    }
    Py_DECREF(v);
    return r;
}

static int tv_set_ll(PyObject *o, PyObject *name, long long v) {
    PyObject *x = PyLong_FromLongLong(v);
    if (!x) return -1;
    int r = PyObject_SetAttr(o, name, x);
    Py_DECREF(x);
    return r;
}

typedef struct {
    PyObject *h, *worker, *run, *space, *rcu;
    long long clock, steps, seen_purged, seen_walk, rcu_calls, interval;
    long long cost[TC_N];
    int tree, walks;
} tvctx_t;

/* Worker._charge(pages) with run.rcu.tick() (C locals; rcu._complete_gp is Python's). */
static int tv_charge(tvctx_t *t, long long pages) {
    long long ns = t->cost[TC_CALL] + t->cost[TC_PAGE] * pages, v;
    PyObject *stats = PyObject_GetAttr(t->space, tv_s_stats);
    if (!stats) return -1;
    int r = tv_get_ll(stats, tv_s_purged_areas, &v);
    Py_DECREF(stats);
    if (r != 1) goto bad;
    if (v != t->seen_purged) {
        ns += t->cost[TC_PURGE_AREA] * (v - t->seen_purged);
        t->seen_purged = v;
    }
    if (t->walks) {
        if ((r = tv_get_ll(t->space, tv_s_walk_steps, &v)) != 1) goto bad;
        if (v != t->seen_walk) {
            ns += t->cost[TC_WALK] * (v - t->seen_walk);
            t->seen_walk = v;
        }
    }
    t->clock += ns;
    t->steps += 1;
    long long calls = t->rcu_calls + 1;
    if (calls >= t->interval) {
        t->rcu_calls = 0;
        if (tv_set_ll(t->rcu, tv_s_calls, 0) < 0) return -1;
        PyObject *x = PyObject_CallMethodNoArgs(t->rcu, tv_s_complete_gp);
        if (!x) return -1;
        Py_DECREF(x);
    } else {
        t->rcu_calls = calls;
    }
    return 0;
bad:
    if (r == 0) PyErr_SetString(PyExc_OverflowError, "tv_loops: a counter outgrew 64 bits");
    return -1;
}

/* Worker.vmalloc(size): the address (new reference) or NULL on error. */
static PyObject *tv_vmalloc(tvctx_t *t, PyObject *size, long long pages) {
    PyObject *h = t->h, *addr = NULL;
    PyObject *cpu = PyTuple_GET_ITEM(h, TV_CPU), *caller = PyTuple_GET_ITEM(h, TV_CALLER);
    if (PyTuple_GET_ITEM(h, TV_C_VMALLOC) == Py_True) {
        PyObject *a[5] = {PyTuple_GET_ITEM(h, TV_VM), size, PyTuple_GET_ITEM(h, TV_GFP), cpu,
                          caller};
        addr = vw_vmalloc_node_range(NULL, a, 5);
        if (!addr) return NULL;
        if (addr == Py_None) Py_CLEAR(addr);
    }
    if (!addr) {
        PyObject *a[3] = {size, cpu, caller};
        addr = PyObject_Vectorcall(PyTuple_GET_ITEM(h, TV_VMALLOC), a, 3, NULL);
        if (!addr) return NULL;
    }
    if (t->tree) {
        PyObject *nf = PyObject_GetAttr(t->space, tv_s_nr_free);
        if (!nf) goto fail;
        int64_t bits = PyLong_CheckExact(nf) ? (int64_t)_PyLong_NumBits(nf) : -1;
        Py_DECREF(nf);
        if (bits < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "tv_loops: nr_free");
            goto fail;
        }
        t->clock += t->cost[TC_TREE_LEVEL] * 2 * bits;
    }
    if (tv_charge(t, pages) < 0) goto fail;
    return addr;
fail:
    Py_DECREF(addr);
    return NULL;
}

/* Worker.vfree(addr, pages): 0, or -1 on error. */
static int tv_vfree(tvctx_t *t, PyObject *addr, long long pages) {
    PyObject *h = t->h, *cpu = PyTuple_GET_ITEM(h, TV_CPU), *r = NULL;
    if (PyTuple_GET_ITEM(h, TV_C_VFREE) == Py_True) {
        PyObject *a[3] = {PyTuple_GET_ITEM(h, TV_VM), addr, cpu};
        r = vw_vfree(NULL, a, 3);
        if (!r) return -1;
        int taken = PyObject_IsTrue(r);
        Py_DECREF(r);
        r = NULL;
        if (taken < 0) return -1;
        if (taken) return tv_charge(t, pages);
    }
    PyObject *a[2] = {addr, cpu};
    r = PyObject_Vectorcall(PyTuple_GET_ITEM(h, TV_VFREE), a, 2, NULL);
    if (!r) return -1;
    Py_DECREF(r);
    return tv_charge(t, pages);
}

/* Worker.write(addr, byte): 0, or -1 on error. */
static int tv_store(tvctx_t *t, PyObject *addr, long byte) {
    PyObject *h = t->h;
    uint64_t a;
    int rc = vw_u64(addr, &a);
    if (rc < 0) return -1;
    uint64_t pa = 0;
    int have = 0;
    long long pmd_shift = PyLong_AsLongLong(PyTuple_GET_ITEM(h, TV_PMD_SHIFT));
    long long entries = PyLong_AsLongLong(PyTuple_GET_ITEM(h, TV_PTE_ENTRIES));
    uint64_t pfn_mask = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(h, TV_PFN_MASK));
    if (PyErr_Occurred()) return -1;
    if (rc == 1 && pmd_shift > 0 && pmd_shift < 64 && entries > 0) {
        PyObject *key = PyLong_FromUnsignedLongLong(a >> pmd_shift);
        if (!key) return -1;
        PyObject *tbl = PyDict_GetItemWithError(PyTuple_GET_ITEM(h, TV_PTECACHE), key);
        Py_DECREF(key);
        if (!tbl && PyErr_Occurred()) return -1;
        if (tbl && PyObject_CheckBuffer(tbl)) {
            Py_buffer b;
            if (PyObject_GetBuffer(tbl, &b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
            Py_ssize_t idx = (Py_ssize_t)((a >> 12) & (uint64_t)(entries - 1));
            if (b.itemsize == 8 && b.format && (b.format[0] == 'Q' || b.format[0] == 'L') &&
                b.format[1] == 0 && (idx + 1) * 8 <= b.len) {
                uint64_t e = ((uint64_t *)b.buf)[idx];
                if ((e & 1) && (e & 2)) { /* _PAGE_PRESENT, _PAGE_RW */
                    pa = (e & pfn_mask) | (a & 4095);
                    have = 1;
                }
            }
            PyBuffer_Release(&b);
        }
    }
    if (!have) { /* PageTables.translate(addr, True): the walk, or the PageFault */
        PyObject *args[2] = {addr, Py_True};
        PyObject *r = PyObject_Vectorcall(PyTuple_GET_ITEM(h, TV_TRANSLATE), args, 2, NULL);
        if (!r) return -1;
        rc = vw_u64(r, &pa);
        Py_DECREF(r);
        if (rc <= 0) {
            if (rc == 0) PyErr_SetString(PyExc_TypeError, "tv_loops: translate");
            return -1;
        }
    }
    uint64_t pfn = pa >> 12, off = pa & 4095;
    long long max_pfn = PyLong_AsLongLong(PyTuple_GET_ITEM(h, TV_MAX_PFN));
    if (max_pfn == -1 && PyErr_Occurred()) return -1;
    if (PyTuple_GET_ITEM(h, TV_FAST_STORE) == Py_True && max_pfn > 0 && pfn < (uint64_t)max_pfn) {
        PyObject *data = PyTuple_GET_ITEM(h, TV_DATA);
        PyObject *key = PyLong_FromUnsignedLongLong(pfn);
        if (!key) return -1;
        PyObject *buf = PyDict_GetItemWithError(data, key);
        if (!buf && PyErr_Occurred()) {
            Py_DECREF(key);
            return -1;
        }
        if (!buf) {
            buf = PyByteArray_FromStringAndSize(NULL, 4096);
            if (!buf) {
                Py_DECREF(key);
                return -1;
            }
            memset(PyByteArray_AS_STRING(buf), 0, 4096);
            int r = PyDict_SetItem(data, key, buf);
            Py_DECREF(buf); /* the dict holds it */
            if (r < 0) {
                Py_DECREF(key);
                return -1;
            }
        }
        Py_DECREF(key);
        if (PyByteArray_CheckExact(buf) && PyByteArray_GET_SIZE(buf) == 4096) {
            PyByteArray_AS_STRING(buf)[off] = (char)byte;
            t->clock += t->cost[TC_WRITE];
            return 0;
        }
    }
    /* PhysicalMemory.write(pfn, offset, bytes((byte,))): its checks and errors */
    PyObject *pfn_o = PyLong_FromUnsignedLongLong(pfn), *off_o = PyLong_FromUnsignedLongLong(off);
    PyObject *r = NULL;
    if (pfn_o && off_o) {
        PyObject *args[3] = {pfn_o, off_o, PyTuple_GET_ITEM(PyTuple_GET_ITEM(h, TV_BYTES), byte)};
        r = PyObject_Vectorcall(PyTuple_GET_ITEM(h, TV_PHYS_WRITE), args, 3, NULL);
    }
    Py_XDECREF(pfn_o);
    Py_XDECREF(off_o);
    if (!r) return -1;
    Py_DECREF(r);
    t->clock += t->cost[TC_WRITE];
    return 0;
}

static int tv_writeback(tvctx_t *t) {
    int r = 0;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb); /* an error in flight survives the write-back */
    r |= tv_set_ll(t->worker, tv_s_clock, t->clock);
    r |= tv_set_ll(t->worker, tv_s_steps, t->steps);
    r |= tv_set_ll(t->run, tv_s_seen_purged, t->seen_purged);
    if (t->walks) r |= tv_set_ll(t->run, tv_s_seen_walk, t->seen_walk);
    r |= tv_set_ll(t->rcu, tv_s_calls, t->rcu_calls);
    if (et) {
        PyErr_Restore(et, ev, tb);
        return -1;
    }
    return r ? -1 : 0;
}

/* tv_loops(h, n, sizes, pages, bytes) -> (loops done, index of the allocation that
 * returned 0 in the next loop or -1, that loop's addresses so far). */
static PyObject *tv_loops(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyTuple_CheckExact(args[0]) || PyTuple_GET_SIZE(args[0]) != TV_N ||
        !PyTuple_CheckExact(args[2]) || !PyTuple_CheckExact(args[3]) ||
        !PyTuple_CheckExact(args[4])) {
        PyErr_SetString(PyExc_TypeError, "tv_loops(h, n, sizes, pages, bytes)");
        return NULL;
    }
    if (tv_init_strings() < 0) return NULL;
    PyObject *h = args[0], *sizes = args[2];
    Py_ssize_t k = PyTuple_GET_SIZE(sizes);
    long long n = PyLong_AsLongLong(args[1]);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (k < 1 || k > 4 || PyTuple_GET_SIZE(args[3]) != k || PyTuple_GET_SIZE(args[4]) != k ||
        !PyTuple_CheckExact(PyTuple_GET_ITEM(h, TV_COSTS)) ||
        PyTuple_GET_SIZE(PyTuple_GET_ITEM(h, TV_COSTS)) != TC_N ||
        !PyTuple_CheckExact(PyTuple_GET_ITEM(h, TV_BYTES)) ||
        PyTuple_GET_SIZE(PyTuple_GET_ITEM(h, TV_BYTES)) != 256 ||
        !PyDict_CheckExact(PyTuple_GET_ITEM(h, TV_PTECACHE)) ||
        !PyDict_CheckExact(PyTuple_GET_ITEM(h, TV_DATA))) {
        PyErr_SetString(PyExc_TypeError, "tv_loops: bad arguments");
        return NULL;
    }
    long long pages[4];
    long bytes[4];
    for (Py_ssize_t j = 0; j < k; j++) {
        pages[j] = PyLong_AsLongLong(PyTuple_GET_ITEM(args[3], j));
        bytes[j] = PyLong_AsLong(PyTuple_GET_ITEM(args[4], j));
        if (PyErr_Occurred()) return NULL;
        if (bytes[j] < 0 || bytes[j] > 255) {
            PyErr_SetString(PyExc_ValueError, "tv_loops: a byte is 0..255");
            return NULL;
        }
    }
    tvctx_t t = {0};
    t.h = h;
    t.worker = PyTuple_GET_ITEM(h, TV_WORKER);
    t.run = PyTuple_GET_ITEM(h, TV_RUN);
    t.space = PyTuple_GET_ITEM(h, TV_SPACE);
    t.rcu = PyTuple_GET_ITEM(h, TV_RCU);
    t.tree = PyTuple_GET_ITEM(h, TV_TREE) == Py_True;
    t.walks = PyTuple_GET_ITEM(h, TV_WALKS) == Py_True;
    for (int i = 0; i < TC_N; i++) {
        t.cost[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(PyTuple_GET_ITEM(h, TV_COSTS), i));
        if (t.cost[i] == -1 && PyErr_Occurred()) return NULL;
    }
    if (tv_get_ll(t.worker, tv_s_clock, &t.clock) != 1 ||
        tv_get_ll(t.worker, tv_s_steps, &t.steps) != 1 ||
        tv_get_ll(t.run, tv_s_seen_purged, &t.seen_purged) != 1 ||
        (t.walks && tv_get_ll(t.run, tv_s_seen_walk, &t.seen_walk) != 1) ||
        tv_get_ll(t.rcu, tv_s_calls, &t.rcu_calls) != 1 ||
        tv_get_ll(t.rcu, tv_s_interval, &t.interval) != 1) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_OverflowError, "tv_loops: a counter is not a 64-bit int");
        return NULL;
    }
    PyObject *ptr[4] = {NULL, NULL, NULL, NULL};
    long long done = 0;
    Py_ssize_t failed = -1, got = 0;
    for (; done < n; done++) {
        for (got = 0; got < k; got++) {
            ptr[got] = tv_vmalloc(&t, PyTuple_GET_ITEM(sizes, got), pages[got]);
            if (!ptr[got]) goto error;
            int nz = PyObject_IsTrue(ptr[got]);
            if (nz < 0) {
                got++;
                goto error;
            }
            if (!nz) {
                failed = got;
                Py_CLEAR(ptr[got]);
                goto out;
            }
        }
        for (Py_ssize_t j = 0; j < k; j++)
            if (tv_store(&t, ptr[j], bytes[j]) < 0) goto error;
        for (Py_ssize_t j = 0; j < k; j++)
            if (tv_vfree(&t, ptr[j], pages[j]) < 0) goto error;
        for (Py_ssize_t j = 0; j < k; j++) Py_CLEAR(ptr[j]);
        got = 0;
    }
out:;
    PyObject *addrs = PyTuple_New(failed < 0 ? 0 : failed);
    if (!addrs) goto error;
    for (Py_ssize_t j = 0; j < failed; j++) {
        PyTuple_SET_ITEM(addrs, j, ptr[j]);
        ptr[j] = NULL;
    }
    if (tv_writeback(&t) < 0) {
        Py_DECREF(addrs);
        return NULL;
    }
    return Py_BuildValue("(LnN)", done, failed, addrs);
error:
    for (Py_ssize_t j = 0; j < 4; j++) Py_CLEAR(ptr[j]);
    tv_writeback(&t);
    return NULL;
}

/* ==================================================== end of test-vmalloc harness section */

/*
 * replay purge section (helper rpurge)
 */

/* The twins of vmap/purge.py's purge phases and of trace/beliefs.py's refill
 * bookkeeping that a replay runs for every purge. Like the whole operations, each
 * mirrors its Python step for step for the kernel's own policies only (an exact
 * VmapSpace with NodePools or NoPools, no method replaced on the instance) and returns
 * None before changing anything when a call is not one it mirrors. */

static PyObject *s_rp_id, *s_rp_decayed_areas, *s_rp_pool_decayed, *s_rp_start, *s_rp_end,
    *s_rp_marked, *s_rp_decay_va_pool_node, *s_rp_decay, *s_rp_keep_small, *s_rp_nodes;

static int rp_strings(void) {
    if (s_rp_nodes) return 0;
#define S(var, text) if (!((var) = PyUnicode_InternFromString(text))) return -1
    S(s_rp_id, "id"); S(s_rp_decayed_areas, "decayed_areas"); S(s_rp_pool_decayed, "pool_decayed");
    S(s_rp_start, "start"); S(s_rp_end, "end"); S(s_rp_marked, "marked");
    S(s_rp_decay_va_pool_node, "decay_va_pool_node"); S(s_rp_decay, "decay");
    S(s_rp_keep_small, "decay_keeps_small_classes"); S(s_rp_nodes, "nodes");
#undef S
    return 0;
}

/* An area and its sort key; `i` keeps a sort stable as list.sort is. */
typedef struct { uint64_t key; Py_ssize_t i; PyObject *va; } rp_item_t;

static int rp_cmp(const void *a, const void *b) {
    const rp_item_t *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->i < y->i ? -1 : (x->i > y->i);
}

/* A lazy area of the batch: its node, its start, its place in the batch. */
typedef struct { uint64_t node, start; Py_ssize_t i; PyObject *va; } rp_lazy_t;

/* Sort the batch by (node, start, i) (every key is unique, `i` included, so any correct
 * sort gives this order): a bottom-up merge sort with the comparison inline, runs of 16
 * by insertion first (rtail: qsort's callback per comparison was most of its cost).
 * 0, or -1 with MemoryError. */
static inline int rp_lazy_lt(const rp_lazy_t *x, const rp_lazy_t *y) {
    if (x->node != y->node) return x->node < y->node;
    if (x->start != y->start) return x->start < y->start;
    return x->i < y->i;
}

static int rp_lazy_sort(rp_lazy_t *a, Py_ssize_t n) {
    const Py_ssize_t run = 16;
    for (Py_ssize_t lo = 0; lo < n; lo += run) {
        Py_ssize_t hi = lo + run < n ? lo + run : n;
        for (Py_ssize_t j = lo + 1; j < hi; j++) {
            rp_lazy_t x = a[j];
            Py_ssize_t k = j;
            for (; k > lo && rp_lazy_lt(&x, &a[k - 1]); k--) a[k] = a[k - 1];
            a[k] = x;
        }
    }
    if (n <= run) return 0;
    rp_lazy_t *tmp = PyMem_Malloc(sizeof(rp_lazy_t) * (size_t)n), *src = a, *dst = tmp;
    if (tmp == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t w = run; w < n; w *= 2) {
        for (Py_ssize_t lo = 0; lo < n; lo += 2 * w) {
            Py_ssize_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            Py_ssize_t p = lo, q = mid, o = lo;
            while (p < mid && q < hi) dst[o++] = rp_lazy_lt(&src[q], &src[p]) ? src[q++] : src[p++];
            while (p < mid) dst[o++] = src[p++];
            while (q < hi) dst[o++] = src[q++];
        }
        rp_lazy_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != a) memcpy(a, src, sizeof(rp_lazy_t) * (size_t)n);
    PyMem_Free(tmp);
    return 0;
}

/* A pool class about to decay: its key, the deque, how many leave from its head. */
typedef struct { long long idx; PyObject *pool; Py_ssize_t take; } rp_class_t;

static int rp_cls_cmp(const void *a, const void *b) {
    const rp_class_t *x = a, *y = b;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

/* begin_purge_nodes(space, pending, batch, full) — mirrors the 6.x part of
 * LazyPurge.begin_purge (vmap/purge.py) with LazyPurge.decay_va_pool_node and
 * NodePools.decay (or NoPools): split the detached lazy areas by node, then per node in
 * order: nr_purged = 0, decay its pools (len >> 2, or all, from each class's head, the
 * classes ascending), record the decayed ranges in pool_decayed, count them, coalesce
 * them ascending and merge them into the free tree, and mark the node's areas sorted
 * by start, widening the pending range. True when done; None (nothing changed) for the
 * reference. */
static PyObject *rp_begin_purge_nodes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "begin_purge_nodes(space, pending, batch, full)");
        return NULL;
    }
    PyObject *pending = args[1], *batch = args[2], *result = NULL, *pend_d = NULL;
    PyObject *log = NULL, *marked = NULL, *pol = NULL;
    rp_lazy_t *items = NULL;
    rp_item_t *dec = NULL;
    rp_class_t *cls = NULL;
    Py_ssize_t *counts = NULL, ncls = 0, ndec_max = 0;
    PyObject **vn_ds = NULL;
    int full = PyObject_IsTrue(args[3]);
    if (full < 0 || rp_strings() < 0) return NULL;
    ctx_t c;
    int rc = ctx_get(args[0], &c);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    Py_ssize_t n = c.n, nb;
    uint64_t s, e, f, pstart, pend;
    if (!PyList_CheckExact(batch)) goto fallback;
    nb = PyList_GET_SIZE(batch);
    /* the method and the policy must be the ones mirrored */
    if (PyDict_GetItemWithError(c.space_d, s_rp_decay_va_pool_node) || PyErr_Occurred())
        goto fallback;
    pol = PyDict_GetItemWithError(c.space_d, s_pools);
    if (!pol) goto fallback;
    int node_pools = Py_TYPE(pol) == node_pools_type;
    if (!node_pools && Py_TYPE(pol) != no_pools_type) goto fallback;
    int keep_small = 1;
    if (node_pools) {
        PyObject *pd = PyObject_GenericGetDict(pol, NULL);
        if (!pd) goto fallback;
        PyObject *ks = PyDict_GetItemWithError(pd, s_rp_keep_small);
        int bad = !ks || (ks != Py_True && ks != Py_False) ||
                  PyDict_GetItemWithError(pd, s_rp_decay) != NULL;
        keep_small = ks == Py_True;
        Py_DECREF(pd);
        if (bad) goto fallback;
    }
    log = PyDict_GetItemWithError(c.space_d, s_rp_pool_decayed);
    if (log) Py_INCREF(log);
    else if (!PyErr_Occurred()) log = PyObject_GetAttr(args[0], s_rp_pool_decayed); /* class's */
    if (!log) goto error;
    if (log != Py_None && !PyList_CheckExact(log)) goto fallback;
    if (!d_int(c.stats_d, s_rp_decayed_areas)) goto fallback;
    pend_d = PyObject_GenericGetDict(pending, NULL);
    if (!pend_d) goto fallback;
    marked = PyDict_GetItemWithError(pend_d, s_rp_marked);
    if (!marked || !PyList_CheckExact(marked) ||
        !u64_of(PyDict_GetItemWithError(pend_d, s_rp_start), &pstart) ||
        !u64_of(PyDict_GetItemWithError(pend_d, s_rp_end), &pend))
        goto fallback;
    /* every value checked before anything changes: the batch ... */
    PyObject *nodes_l = PyDict_GetItemWithError(c.space_d, s_rp_nodes);
    if (!nodes_l || !PyList_CheckExact(nodes_l) || PyList_GET_SIZE(nodes_l) != n) goto fallback;
    for (Py_ssize_t k = 0; k < n; k++)
        if (PyList_GET_ITEM(nodes_l, k) != PyTuple_GET_ITEM(c.nodes, k)) goto fallback;
    items = PyMem_Malloc(sizeof(rp_lazy_t) * (nb ? nb : 1));
    counts = PyMem_Calloc((size_t)n, sizeof(Py_ssize_t));
    vn_ds = PyMem_Calloc((size_t)n, sizeof(PyObject *));
    if (!items || !counts || !vn_ds) { PyErr_NoMemory(); goto error; }
    for (Py_ssize_t i = 0; i < nb; i++) {
        PyObject *va = PyList_GET_ITEM(batch, i);
        if (Py_TYPE(va) != va_type || !va_bounds(va, &s, &e) || !u64_of(SLOT(va, off_flags), &f))
            goto fallback;
        /* lazy_node_of(va): the allocating node, else the address's node */
        uint64_t tag = f >> 8, vn_id;
        if (tag >= 1 && tag - 1 < (uint64_t)n)
            vn_id = tag - 1;
        else
            vn_id = n > 1 ? (s / c.zone) % (uint64_t)n : 0;
        items[i].node = vn_id; /* grouped by node below, then by start */
        items[i].start = s;
        items[i].i = i;
        items[i].va = va;
        counts[vn_id]++;
    }
    /* ... and every node's pools and the areas its decay takes */
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *vn = PyTuple_GET_ITEM(c.nodes, k);
        PyObject *d = PyObject_GenericGetDict(vn, NULL);
        if (!d) goto fallback;
        vn_ds[k] = d;
        PyObject *id = d_int(d, s_rp_id);
        if (!id || PyLong_AsSsize_t(id) != k || PyDict_GetItemWithError(d, s_pools) !=
                                                   PyTuple_GET_ITEM(c.pools, k) ||
            !d_int(d, s_nr_purged))
            goto fallback;
        PyObject *pd = PyTuple_GET_ITEM(c.pools, k);
        if (!PyDict_CheckExact(pd)) goto fallback;
        if (!node_pools) {
            if (PyDict_GET_SIZE(pd)) goto fallback; /* NoPools.check would complain */
            continue;
        }
        Py_ssize_t pos = 0;
        PyObject *key, *pool;
        while (PyDict_Next(pd, &pos, &key, &pool)) {
            int of = 0;
            if (!PyLong_CheckExact(key) || Py_TYPE(pool) != deque_type) goto fallback;
            (void)PyLong_AsLongLongAndOverflow(key, &of);
            if (of) goto fallback;
            Py_ssize_t len = PySequence_Size(pool);
            if (len < 0) goto error;
            Py_ssize_t take = len;
            if (!full) take = (len < 4 && !keep_small) ? len : len >> 2;
            ndec_max += take;
            PyObject *it = PyObject_GetIter(pool);
            if (!it) goto error;
            for (Py_ssize_t j = 0; j < take; j++) {
                PyObject *va = PyIter_Next(it);
                int ok = va && Py_TYPE(va) == va_type && va_bounds(va, &s, &e);
                Py_XDECREF(va);
                if (!ok) { Py_DECREF(it); goto fallback; }
            }
            Py_DECREF(it);
        }
    }
    /* the pending purge's range, and the order: node, then start (stable) */
    if (rp_lazy_sort(items, nb) < 0) goto error;
    dec = PyMem_Malloc(sizeof(rp_item_t) * (ndec_max ? ndec_max : 1));
    if (!dec) { PyErr_NoMemory(); goto error; }
    Py_ssize_t first = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *vn = PyTuple_GET_ITEM(c.nodes, k), *pd = PyTuple_GET_ITEM(c.pools, k);
        if (PyDict_SetItem(vn_ds[k], s_nr_purged, small_zero) < 0) goto error;
        /* decay_va_pool_node(vn, full): NodePools.decay, the classes ascending */
        Py_ssize_t ndec = 0;
        if (node_pools && PyDict_GET_SIZE(pd)) {
            Py_ssize_t pos = 0, m = 0;
            PyObject *key, *pool;
            PyMem_Free(cls);
            cls = PyMem_Malloc(sizeof(rp_class_t) * (size_t)PyDict_GET_SIZE(pd));
            if (!cls) { PyErr_NoMemory(); goto error; }
            while (PyDict_Next(pd, &pos, &key, &pool)) {
                int of = 0;
                cls[m].idx = PyLong_AsLongLongAndOverflow(key, &of); /* checked above */
                cls[m].pool = pool;
                Py_INCREF(pool);
                m++;
            }
            ncls = m;
            qsort(cls, (size_t)ncls, sizeof(rp_class_t), rp_cls_cmp);
            for (Py_ssize_t j = 0; j < ncls; j++) {
                Py_ssize_t len = PySequence_Size(cls[j].pool);
                if (len < 0) goto error;
                Py_ssize_t take = len;
                if (!full) take = (len < 4 && !keep_small) ? len : len >> 2;
                for (Py_ssize_t t = 0; t < take; t++) {
                    PyObject *va = call1(dq_popleft, cls[j].pool); /* a new reference */
                    if (!va) goto error;
                    grave_t g;
                    g.n = 0;
                    set_state(&g, va, st_detached);
                    flush(&g);
                    va_bounds(va, &s, &e);
                    dec[ndec].key = s;
                    dec[ndec].i = ndec;
                    dec[ndec].va = va;
                    ndec++;
                }
            }
            for (Py_ssize_t j = 0; j < ncls; j++) Py_DECREF(cls[j].pool);
            ncls = 0;
        }
        if (ndec) {
            int err = 0;
            if (log != Py_None) {
                PyObject *node = PyDict_GetItemWithError(vn_ds[k], s_rp_id);
                for (Py_ssize_t j = 0; j < ndec && !err; j++) {
                    PyObject *t = node ? PyTuple_Pack(3, SLOT(dec[j].va, off_start),
                                                      SLOT(dec[j].va, off_end), node)
                                       : NULL;
                    err = !t || PyList_Append(log, t) < 0;
                    Py_XDECREF(t);
                }
            }
            if (!err) err = d_add(c.stats_d, s_rp_decayed_areas, ndec) < 0;
            qsort(dec, (size_t)ndec, sizeof(rp_item_t), rp_cmp);
            /* coalesced among themselves (the private tree), then merged ascending */
            Py_ssize_t last = 0;
            for (Py_ssize_t j = 1; j < ndec && !err; j++) {
                uint64_t ls, le;
                va_bounds(dec[last].va, &ls, &le);
                if (le == dec[j].key) {
                    grave_t g;
                    g.n = 0;
                    set_slot(&g, dec[last].va, off_end, SLOT(dec[j].va, off_end));
                    flush(&g);
                    dec[j].i = -1; /* taken into the one before */
                } else
                    last = j;
            }
            for (Py_ssize_t j = 0; j < ndec && !err; j++)
                if (dec[j].i >= 0) err = merge_back(&c, dec[j].va) < 0;
            for (Py_ssize_t j = 0; j < ndec; j++) Py_DECREF(dec[j].va);
            if (err) goto error;
        }
        /* the node's lazy areas, by start */
        Py_ssize_t cnt = counts[k];
        if (cnt) {
            PyObject *lst = PyList_New(cnt);
            if (!lst) goto error;
            for (Py_ssize_t j = 0; j < cnt; j++) {
                Py_INCREF(items[first + j].va);
                PyList_SET_ITEM(lst, j, items[first + j].va);
            }
            PyObject *lo = items[first].va, *hi = items[first + cnt - 1].va;
            int err = 0;
            va_bounds(lo, &s, &e);
            if (s < pstart) {
                pstart = s;
                err = PyDict_SetItem(pend_d, s_rp_start, SLOT(lo, off_start)) < 0;
            }
            va_bounds(hi, &s, &e);
            if (!err && e > pend) {
                pend = e;
                err = PyDict_SetItem(pend_d, s_rp_end, SLOT(hi, off_end)) < 0;
            }
            PyObject *pair = err ? NULL : PyTuple_Pack(2, vn, lst);
            Py_DECREF(lst);
            if (!pair) goto error;
            err = PyList_Append(marked, pair) < 0;
            Py_DECREF(pair);
            if (err) goto error;
            first += cnt;
        }
    }
    result = Py_True;
    Py_INCREF(result);
    goto out;
fallback:
    if (PyErr_Occurred()) goto error;
    result = Py_None;
    Py_INCREF(result);
    goto out;
error:
    result = NULL;
out:
    for (Py_ssize_t j = 0; j < ncls; j++) Py_DECREF(cls[j].pool);
    PyMem_Free(cls);
    PyMem_Free(dec);
    PyMem_Free(items);
    PyMem_Free(counts);
    if (vn_ds)
        for (Py_ssize_t k = 0; k < n; k++) Py_XDECREF(vn_ds[k]);
    PyMem_Free(vn_ds);
    Py_XDECREF(pend_d);
    Py_XDECREF(log);
    ctx_release(&c);
    return result;
}

/* batch_without(batch, done) -> [va for va in batch if va not in set(done)] — the
 * filter of LazyPurge.purge_next_node (vmap/purge.py); VmapArea hashes and compares by
 * identity, so a set of pointers decides the same. None (nothing read) when an item is
 * not an exact VmapArea. */
static PyObject *rp_batch_without(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "batch_without(batch: list, done: list)");
        return NULL;
    }
    PyObject *batch = args[0], *done = args[1];
    if (va_ready() < 0) return NULL;
    Py_ssize_t nb = PyList_GET_SIZE(batch), nd = PyList_GET_SIZE(done);
    for (Py_ssize_t i = 0; i < nb; i++)
        if (Py_TYPE(PyList_GET_ITEM(batch, i)) != va_type) Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < nd; i++)
        if (Py_TYPE(PyList_GET_ITEM(done, i)) != va_type) Py_RETURN_NONE;
    size_t cap = 16;
    while (cap < (size_t)nd * 2 + 1) cap <<= 1;
    PyObject **tab = PyMem_Calloc(cap, sizeof(PyObject *));
    if (!tab) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < nd; i++) {
        PyObject *o = PyList_GET_ITEM(done, i);
        size_t h = ((uintptr_t)o >> 4) * 0x9E3779B97F4A7C15ull;
        for (size_t j = h & (cap - 1);; j = (j + 1) & (cap - 1)) {
            if (tab[j] == o) break;
            if (tab[j] == NULL) { tab[j] = o; break; }
        }
    }
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out && i < nb; i++) {
        PyObject *o = PyList_GET_ITEM(batch, i);
        size_t h = ((uintptr_t)o >> 4) * 0x9E3779B97F4A7C15ull;
        int hit = 0;
        for (size_t j = h & (cap - 1); tab[j] != NULL; j = (j + 1) & (cap - 1))
            if (tab[j] == o) { hit = 1; break; }
        if (!hit && PyList_Append(out, o) < 0) Py_CLEAR(out);
    }
    PyMem_Free(tab);
    return out;
}

/* stamp(gen, added, seq): gen[id(va)] = seq for each va of added (Beliefs.after_refill). */
static PyObject *rp_stamp(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyDict_CheckExact(args[0]) || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "stamp(gen: dict, added: list, seq)");
        return NULL;
    }
    PyObject *gen = args[0], *added = args[1], *seq = args[2];
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(added); i++) {
        PyObject *key = PyLong_FromVoidPtr(PyList_GET_ITEM(added, i)); /* id(va) */
        if (!key) return NULL;
        int rc = PyDict_SetItem(gen, key, seq);
        Py_DECREF(key);
        if (rc < 0) return NULL;
    }
    Py_RETURN_NONE;
}

/* insert_from(pool, va, gen, start) -> index | None — Beliefs._insert_by_purge_order
 * (trace/beliefs.py) scanning from `start`: va goes before the first entry from there
 * with an older purge stamp, or the same stamp and a lower start (stamps gen[id(area)],
 * 0 when absent); returns where it went. None (nothing changed) for values it does not
 * read as the reference does. */
static PyObject *rp_insert_from(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || Py_TYPE(args[0]) != deque_type || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "insert_from(pool: deque, va, gen: dict, start)");
        return NULL;
    }
    PyObject *pool = args[0], *va = args[1], *gen = args[2];
    Py_ssize_t start = PyLong_AsSsize_t(args[3]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    uint64_t vs, ve;
    long long g;
    if (va_ready() < 0) return NULL;
    if (Py_TYPE(va) != va_type || !va_bounds(va, &vs, &ve) || start < 0) Py_RETURN_NONE;
    /* the stamp of an area: 1 read, 0 not an int we compare as the reference does */
#define RP_GEN(o, out)                                                                   \
    do {                                                                                 \
        PyObject *k_ = PyLong_FromVoidPtr(o);                                            \
        if (!k_) goto error;                                                             \
        PyObject *v_ = PyDict_GetItemWithError(gen, k_);                                 \
        Py_DECREF(k_);                                                                   \
        if (!v_ && PyErr_Occurred()) goto error;                                         \
        int of_ = 0;                                                                     \
        (out) = v_ ? (PyLong_CheckExact(v_) ? PyLong_AsLongLongAndOverflow(v_, &of_) : 0) \
                   : 0;                                                                  \
        if (v_ && (!PyLong_CheckExact(v_) || of_)) goto decline;                         \
    } while (0)
    PyObject *it = NULL, *other = NULL;
    RP_GEN(va, g);
    it = PyObject_GetIter(pool);
    if (!it) return NULL;
    Py_ssize_t i = 0;
    for (; i < start; i++) {
        other = PyIter_Next(it);
        if (!other) break;
        Py_CLEAR(other);
    }
    if (PyErr_Occurred()) goto error;
    if (i == start) {
        while ((other = PyIter_Next(it)) != NULL) {
            uint64_t os, oe;
            long long og;
            if (Py_TYPE(other) != va_type || !va_bounds(other, &os, &oe)) goto decline;
            RP_GEN(other, og);
            Py_CLEAR(other);
            if (og < g || (og == g && os < vs)) break;
            i++;
        }
        if (PyErr_Occurred()) goto error;
    } /* else: start past the end, va goes last as the reference's empty scan puts it */
    Py_CLEAR(it);
#undef RP_GEN
    {
        PyObject *r = PyObject_CallMethod(pool, "insert", "nO", i, va);
        if (!r) return NULL;
        Py_DECREF(r);
    }
    return PyLong_FromSsize_t(i);
decline:
    Py_XDECREF(other);
    Py_XDECREF(it);
    Py_RETURN_NONE;
error:
    Py_XDECREF(other);
    Py_XDECREF(it);
    return NULL;
}

/* ============================================================ end of replay purge section */

/*
 * replay divergence section (helper rdiverge)
 *
 * What Replayer does after a divergence looks at the events around the one being
 * replayed: the other tasks' next events (_lock_order_race, _late_lock_order), what
 * happened in between (_untouched), the same task's previous event (_cpu_before_at),
 * the last allocation at an address (_head_moved_explains). event_table() packs the
 * fields those scans read into one array, once per event list (and finds the purge
 * events prepare() needs on the way); the scans below then walk that array instead of
 * the event objects. Each returns exactly what its Python loop finds, or -2 when the
 * table does not describe the events it was asked about (the caller's loop runs).
 */
enum { RD_ALLOC = 0, RD_FAILED = 1, RD_FREE = 2, RD_PURGE = 3 };

typedef struct {
    uint64_t addr; /* an allocation's addr, a free's va_start */
    uint64_t size; /* an allocation's size */
    double ts;
    int64_t pid;
    int64_t cpu;
    PyObject *task; /* borrowed: the list the table holds keeps every event alive */
    int kind;
} rd_row;

typedef struct {
    PyObject *events; /* the list, as it was packed */
    Py_ssize_t n;
    /* the successful allocations alone: their addrs and positions, and for each
     * position k (and n) the first of them at or after k */
    uint64_t *alloc_addr;
    Py_ssize_t *alloc_pos, *alloc_from;
    int64_t *pid; /* each row's pid again, side by side for the task walks */
    rd_row rows[];
} rd_table;

static const char *rd_capsule_name = "pyvmalloc._speedups.event_table";

static void rd_table_free_mem(rd_table *t) {
    Py_XDECREF(t->events);
    PyMem_Free(t->alloc_addr);
    PyMem_Free(t->alloc_pos);
    PyMem_Free(t->alloc_from);
    PyMem_Free(t->pid);
    PyMem_Free(t);
}

static void rd_table_free(PyObject *cap) {
    rd_table *t = PyCapsule_GetPointer(cap, rd_capsule_name);
    if (t != NULL) rd_table_free_mem(t);
}

/* The table of `o` (a capsule from event_table), or NULL with an exception. */
static rd_table *rd_get(PyObject *o) { return PyCapsule_GetPointer(o, rd_capsule_name); }

/* Whether rows a and b are the same task: `a.pid == b.pid and a.task == b.task`. */
static inline int rd_same_task(const rd_row *a, const rd_row *b) {
    if (a->pid != b->pid) return 0;
    if (a->task == b->task) return 1;
    return PyUnicode_Compare(a->task, b->task) == 0;
}

static inline int rd_i64(PyObject *o, int64_t *out) {
    uint64_t u;
    if (u64_of(o, &u) && u <= (uint64_t)INT64_MAX) { /* the usual case, inline */
        *out = (int64_t)u;
        return 1;
    }
    if (o == NULL || !PyLong_CheckExact(o)) return 0;
    int over = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &over);
    if (over || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = v;
    return 1;
}

/* event_table(events) -> (table, purge_at, busy_until) | None.
 * purge_at: the positions of the purge events; busy_until: for each, the last event
 * its CPU traced since the previous purge event (-1 if none): Replayer.prepare()'s
 * look-ahead. None when an event is not exactly one of the three event classes or a
 * field is not a plain value (the caller's Python then does it all). */
static PyObject *rd_event_table(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "event_table(events: list)");
        return NULL;
    }
    if (ev_alloc_t == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.init_trace_events() was not called");
        return NULL;
    }
    PyObject *events = args[0];
    Py_ssize_t n = PyList_GET_SIZE(events);
    rd_table *t = PyMem_Malloc(sizeof(rd_table) + (size_t)(n ? n : 1) * sizeof(rd_row));
    if (t == NULL) return PyErr_NoMemory();
    t->events = NULL;
    t->n = n;
    t->alloc_addr = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
    t->alloc_pos = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    t->alloc_from = PyMem_Malloc((size_t)(n + 1) * sizeof(Py_ssize_t));
    t->pid = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    Py_ssize_t na = 0;
    PyObject *purge_at = PyList_New(0), *busy = PyDict_New(), *cap = NULL, *out = NULL;
    if (t->alloc_addr == NULL || t->alloc_pos == NULL || t->alloc_from == NULL || t->pid == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    if (purge_at == NULL || busy == NULL) goto fail;
    Py_ssize_t prev = -1;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *e = PyList_GET_ITEM(events, k);
        PyTypeObject *tp = Py_TYPE(e);
        rd_row *r = &t->rows[k];
        t->alloc_from[k] = na;
        int c = tp == ev_alloc_t ? 0 : tp == ev_free_t ? 1 : tp == ev_purge_t ? 2 : -1;
        if (c < 0) goto decline;
        PyObject *ts = SLOT(e, off_hdr[c][4]), *task = SLOT(e, off_hdr[c][0]);
        if (ts == NULL || !PyFloat_CheckExact(ts) || task == NULL || !PyUnicode_CheckExact(task) ||
            !rd_i64(SLOT(e, off_hdr[c][1]), &r->pid) || !rd_i64(SLOT(e, off_hdr[c][2]), &r->cpu))
            goto decline;
        r->ts = PyFloat_AS_DOUBLE(ts);
        r->task = task;
        t->pid[k] = r->pid;
        r->addr = r->size = 0;
        if (c == 0) {
            PyObject *failed = SLOT(e, off_alloc[5]);
            int bad = failed == NULL ? -1 : PyObject_IsTrue(failed);
            if (bad < 0) {
                PyErr_Clear();
                goto decline;
            }
            r->kind = bad ? RD_FAILED : RD_ALLOC;
            if (!bad && (!u64_of(SLOT(e, off_alloc[0]), &r->addr) ||
                         !u64_of(SLOT(e, off_alloc[1]), &r->size)))
                goto decline;
            if (!bad) {
                t->alloc_addr[na] = r->addr;
                t->alloc_pos[na++] = k;
            }
        } else if (c == 1) {
            r->kind = RD_FREE;
            if (!u64_of(SLOT(e, off_free[0]), &r->addr)) goto decline;
        } else {
            r->kind = RD_PURGE;
            Py_ssize_t last = -1;
            for (Py_ssize_t j = k - 1; j > prev; j--)
                if (t->rows[j].cpu == r->cpu) {
                    last = j;
                    break;
                }
            PyObject *ko = PyLong_FromSsize_t(k), *lo = PyLong_FromSsize_t(last);
            int bad = ko == NULL || lo == NULL || PyList_Append(purge_at, ko) < 0 ||
                      PyDict_SetItem(busy, ko, lo) < 0;
            Py_XDECREF(ko);
            Py_XDECREF(lo);
            if (bad) goto fail;
            prev = k;
        }
    }
    t->alloc_from[n] = na;
    Py_INCREF(events);
    t->events = events;
    cap = PyCapsule_New(t, rd_capsule_name, rd_table_free);
    if (cap == NULL) {
        rd_table_free_mem(t);
        Py_DECREF(purge_at);
        Py_DECREF(busy);
        return NULL;
    }
    out = PyTuple_Pack(3, cap, purge_at, busy);
    Py_DECREF(cap);
    Py_DECREF(purge_at);
    Py_DECREF(busy);
    return out;
decline:
    rd_table_free_mem(t);
    Py_XDECREF(purge_at);
    Py_XDECREF(busy);
    Py_RETURN_NONE;
fail:
    rd_table_free_mem(t);
    Py_XDECREF(purge_at);
    Py_XDECREF(busy);
    return NULL;
}

/* Arguments: the table, an event position and a count of u64 values after them. */
static rd_table *rd_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *sig,
                         Py_ssize_t *i) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s", sig);
        return NULL;
    }
    rd_table *t = rd_get(args[0]);
    if (t == NULL) return NULL;
    *i = PyLong_AsSsize_t(args[1]);
    if (*i == -1 && PyErr_Occurred()) return NULL;
    return t;
}

/* lock_order_next(table, i, ev, start, size, events, seconds) -> j | -1 | -2:
 * _lock_order_race's window: the first of events[i+1 : i+1+events] (stopping at one
 * more than `seconds` after ev) that is its task's first there, not ev's task, and a
 * successful allocation overlapping [start, start + size). -2: ev is not events[i]
 * as packed, or a value is past 64 bits. */
static PyObject *rd_lock_order_next(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t i;
    rd_table *t = rd_args(args, nargs, 7,
                          "lock_order_next(table, i, ev, start, size, events, seconds)", &i);
    if (t == NULL) return NULL;
    uint64_t start, size;
    Py_ssize_t count = PyLong_AsSsize_t(args[5]);
    double secs = PyFloat_AsDouble(args[6]);
    if ((count == -1 || secs == -1.0) && PyErr_Occurred()) return NULL;
    if (i < 0 || i >= t->n || PyList_GET_SIZE(t->events) != t->n ||
        PyList_GET_ITEM(t->events, i) != args[2] || !u64_of(args[3], &start) ||
        !u64_of(args[4], &size))
        return PyLong_FromLong(-2);
    const rd_row *rows = t->rows, *ev = &rows[i];
    u128 end = (u128)start + size;
    Py_ssize_t stop = i + 1 + (count > 0 ? count : 0);
    if (stop > t->n) stop = t->n;
    for (Py_ssize_t k = i + 1; k < stop; k++) {
        const rd_row *o = &rows[k];
        if (o->ts - ev->ts > secs) break;
        if (o->kind != RD_ALLOC || !(o->addr < end && start < (u128)o->addr + o->size)) continue;
        int seen = 0; /* is it its task's first event since ev (ev's task counts as seen)? */
        for (Py_ssize_t j = i; j < k && !seen; j++) seen = rd_same_task(&rows[j], o);
        if (PyErr_Occurred()) return NULL;
        if (!seen) return PyLong_FromSsize_t(k);
    }
    return PyLong_FromLong(-1);
}

/* next_alloc_in(table, i, lo, start, size, limit) -> j | -1 | -2: the first
 * successful allocation of events[i+1 : i+1+limit] whose addr is in
 * [lo, start + size): _late_lock_order's candidate (the lowest next position over
 * the allocations at each address of the range is the first one after i). */
static PyObject *rd_next_alloc_in(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t i;
    rd_table *t =
        rd_args(args, nargs, 6, "next_alloc_in(table, i, lo, start, size, limit)", &i);
    if (t == NULL) return NULL;
    uint64_t lo, start, size;
    Py_ssize_t limit = PyLong_AsSsize_t(args[5]);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    if (i < -1 || i >= t->n || !u64_of(args[2], &lo) || !u64_of(args[3], &start) ||
        !u64_of(args[4], &size))
        return PyLong_FromLong(-2);
    u128 hi = (u128)start + size;
    Py_ssize_t stop = i + 1 + (limit > 0 ? limit : 0);
    if (stop > t->n) stop = t->n;
    const uint64_t *addr = t->alloc_addr;
    for (Py_ssize_t m = t->alloc_from[i + 1], end = t->alloc_from[stop]; m < end; m++)
        if (lo <= addr[m] && addr[m] < hi) return PyLong_FromSsize_t(t->alloc_pos[m]);
    return PyLong_FromLong(-1);
}

/* untouched(table, first, stop, start, size) -> bool | None: _untouched for the task
 * of events[stop] and the range [start, start + size). None: a value past 64 bits. */
static PyObject *rd_untouched(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t first, stop;
    rd_table *t = rd_args(args, nargs, 5, "untouched(table, first, stop, start, size)", &first);
    if (t == NULL) return NULL;
    stop = PyLong_AsSsize_t(args[2]);
    if (stop == -1 && PyErr_Occurred()) return NULL;
    uint64_t start, size;
    if (first < 0 || stop < 0 || stop >= t->n || !u64_of(args[3], &start) ||
        !u64_of(args[4], &size))
        Py_RETURN_NONE;
    const rd_row *rows = t->rows, *who = &rows[stop];
    u128 end = (u128)start + size;
    for (Py_ssize_t k = first; k < stop; k++) {
        const rd_row *e = &rows[k];
        if (rd_same_task(e, who)) Py_RETURN_FALSE;
        if (e->kind == RD_ALLOC) {
            if (e->addr < end && start < (u128)e->addr + e->size) Py_RETURN_FALSE;
        } else if (e->kind == RD_FREE && start <= e->addr && e->addr < end)
            Py_RETURN_FALSE;
    }
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_TRUE;
}

/* prev_of_task(table, i, lookback) -> j | -1: the last of the `lookback` events
 * before events[i] that is of events[i]'s task (_cpu_before_at's walk). */
static PyObject *rd_prev_of_task(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t i;
    rd_table *t = rd_args(args, nargs, 3, "prev_of_task(table, i, lookback)", &i);
    if (t == NULL) return NULL;
    Py_ssize_t back = PyLong_AsSsize_t(args[2]);
    if (back == -1 && PyErr_Occurred()) return NULL;
    if (i < 0 || i >= t->n) {
        PyErr_SetString(PyExc_IndexError, "prev_of_task: position out of range");
        return NULL;
    }
    const rd_row *rows = t->rows, *ev = &rows[i];
    const int64_t *pid = t->pid, want = ev->pid;
    Py_ssize_t low = i - 1 - back;
    if (low < -1) low = -1;
    for (Py_ssize_t j = i - 1; j > low; j--)
        if (pid[j] == want && rd_same_task(&rows[j], ev)) return PyLong_FromSsize_t(j);
    if (PyErr_Occurred()) return NULL;
    return PyLong_FromLong(-1);
}

/* last_alloc_at(table, i, addr, lookback) -> k | -1 | -2: the last successful
 * allocation at exactly addr among the `lookback` events before events[i]
 * (_head_moved_explains' origin of a pool head; one further back does not count). */
static PyObject *rd_last_alloc_at(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t i;
    rd_table *t = rd_args(args, nargs, 4, "last_alloc_at(table, i, addr, lookback)", &i);
    if (t == NULL) return NULL;
    uint64_t addr;
    Py_ssize_t back = PyLong_AsSsize_t(args[3]);
    if (back == -1 && PyErr_Occurred()) return NULL;
    if (!u64_of(args[2], &addr)) return PyLong_FromLong(-2);
    if (i > t->n) i = t->n;
    if (i < 0) i = 0;
    Py_ssize_t low = i - back;
    if (low < 0) low = 0;
    if (low > i) low = i;
    for (Py_ssize_t m = t->alloc_from[i] - 1, first = t->alloc_from[low]; m >= first; m--)
        if (t->alloc_addr[m] == addr) return PyLong_FromSsize_t(t->alloc_pos[m]);
    return PyLong_FromLong(-1);
}


/* cpu_before(table, i, ev, lookback, off_cpu) -> cpu | -1 | -2: _cpu_before_at for
 * events[i] (which must be ev, else -2): the CPU of the same task's previous event of
 * the `lookback` before it when that CPU differs and that event was traced with a
 * reschedule pending (its flags' second column not '.') or `off_cpu` seconds or more
 * before; -1 otherwise. */
static PyObject *rd_cpu_before(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t i;
    rd_table *t = rd_args(args, nargs, 5, "cpu_before(table, i, ev, lookback, off_cpu)", &i);
    if (t == NULL) return NULL;
    Py_ssize_t back = PyLong_AsSsize_t(args[3]);
    double off_cpu = PyFloat_AsDouble(args[4]);
    if ((back == -1 || off_cpu == -1.0) && PyErr_Occurred()) return NULL;
    if (i < 0 || i >= t->n || PyList_GET_SIZE(t->events) != t->n ||
        PyList_GET_ITEM(t->events, i) != args[2])
        return PyLong_FromLong(-2);
    const rd_row *rows = t->rows, *ev = &rows[i];
    const int64_t *pid = t->pid, want = ev->pid;
    Py_ssize_t low = i - 1 - back;
    if (low < -1) low = -1;
    for (Py_ssize_t j = i - 1; j > low; j--) {
        if (pid[j] != want || !rd_same_task(&rows[j], ev)) continue;
        const rd_row *o = &rows[j];
        if (o->cpu == ev->cpu) return PyLong_FromLong(-1); /* not moved */
        if (o->cpu < 0) return PyLong_FromLong(-2);
        PyObject *other = PyList_GET_ITEM(t->events, j);
        int c = o->kind == RD_FREE ? 1 : o->kind == RD_PURGE ? 2 : 0;
        PyObject *flags = SLOT(other, off_hdr[c][3]);
        if (flags == NULL || !PyUnicode_CheckExact(flags)) return PyLong_FromLong(-2);
        int resched = PyUnicode_GET_LENGTH(flags) > 1 && PyUnicode_ReadChar(flags, 1) != '.';
        int slept = ev->ts - o->ts >= off_cpu;
        return PyLong_FromLongLong(resched || slept ? o->cpu : -1);
    }
    if (PyErr_Occurred()) return NULL;
    return PyLong_FromLong(-1);
}

/* undo_alloc(space, va) -> True | False | None: TraceHarness.undo_alloc for an area
 * the tree gave (not a pool head): va out of its busy tree (find_unlink_vmap_area),
 * its vm cleared, back into the free tree (merge_or_add_vmap_area_augment), one
 * allocation less in the stats. False: the busy area at va's start was another one
 * (now unlinked, as the reference leaves it; the caller raises). None: nothing
 * changed, the caller runs the reference. */
static PyObject *rd_undo_alloc(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "undo_alloc(space, va)");
        return NULL;
    }
    static PyObject *s_vm = NULL;
    if (!s_vm && !(s_vm = PyUnicode_InternFromString("vm"))) return NULL;
    PyObject *space = args[0], *va = args[1], *result = NULL;
    ctx_t c;
    int rc = ctx_get_ex(space, &c, 1);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    if (Py_TYPE(va) != va_type || SLOT(va, off_start) == NULL) {
        result = Py_NewRef(Py_None);
        goto out;
    }
    PyObject *fa[2] = {space, SLOT(va, off_start)};
    PyObject *found = sp_find_unlink_vmap_area(NULL, fa, 2);
    if (found == NULL) goto out;
    if (found == Py_None) {
        result = found; /* declined: nothing changed */
        goto out;
    }
    Py_DECREF(found);
    if (found != va) {
        result = Py_NewRef(Py_False);
        goto out;
    }
    if (PyObject_SetAttr(va, s_vm, Py_None) < 0 || merge_back(&c, va) < 0 ||
        d_add(c.stats_d, s_allocs, -1) < 0)
        goto out;
    result = Py_NewRef(Py_True);
out:
    ctx_release(&c);
    return result;
}

/* --- _where's tree lookups --------------------------------------------------------- */
/* The node of a tree of disjoint ranges that holds addr (NULL: none; -1 in *bad when
 * a node is not a plain VmapArea). */
static PyObject *rd_holding(PyObject *root, uint64_t addr, int *bad) {
    PyObject *node = get_node(root, off_root);
    uint64_t s, e;
    while (node != NULL) {
        if (Py_TYPE(node) != va_type || !u64_of(SLOT(node, off_start), &s) ||
            !u64_of(SLOT(node, off_end), &e)) {
            *bad = 1;
            return NULL;
        }
        if (addr < s)
            node = get_node(node, off_left);
        else if (addr >= e)
            node = get_node(node, off_right);
        else
            return node;
    }
    return NULL;
}

/* (kind, obj or (obj.va_start, obj.va_end), -1, -1); kind an interned name, kept */
static PyObject *rd_loc(PyObject **kind, const char *name, PyObject *obj, int pair) {
    if (*kind == NULL && (*kind = PyUnicode_InternFromString(name)) == NULL) return NULL;
    PyObject *o = obj, *out;
    if (pair && !(o = PyTuple_Pack(2, SLOT(obj, off_start), SLOT(obj, off_end)))) return NULL;
    out = PyTuple_Pack(4, *kind, o, minus_one, minus_one);
    if (pair) Py_DECREF(o);
    return out;
}
static PyObject *rd_s_free = NULL, *rd_s_busy = NULL, *rd_s_parked = NULL;

/* where_tree(space, parked, parked_starts, addr) -> loc | False | None: the first
 * three of Replayer._where's lookups (the free tree, every node's busy tree, the
 * beliefs' parked ranges) as ("free", (start, end), -1, -1), ("busy", va, -1, -1) or
 * ("parked", (start, end), -1, -1); False when none holds addr; None when the space or
 * a value is not one this mirrors (the Python lookups then run). */
static PyObject *rd_where_tree(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyDict_Check(args[1]) || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "where_tree(space, parked: dict, parked_starts: list, addr)");
        return NULL;
    }
    uint64_t addr;
    if (minus_one == NULL || !u64_of(args[3], &addr)) Py_RETURN_NONE;
    ctx_t c;
    int rc = ctx_get_ex(args[0], &c, 0);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    PyObject *out = NULL, *hit;
    int bad = 0;
    if ((hit = rd_holding(c.root, addr, &bad)) != NULL) {
        out = rd_loc(&rd_s_free, "free", hit, 1);
        goto done;
    }
    for (Py_ssize_t i = 0; i < c.n && !bad; i++)
        if ((hit = rd_holding(PyTuple_GET_ITEM(c.busy, i), addr, &bad)) != NULL) {
            out = rd_loc(&rd_s_busy, "busy", hit, 0);
            goto done;
        }
    if (bad) goto decline;
    if (PyDict_GET_SIZE(args[1]) > 0) {
        /* bisect_right(parked_starts, addr) - 1, then that range if it holds addr */
        PyObject *starts = args[2];
        Py_ssize_t lo = 0, hi = PyList_GET_SIZE(starts);
        while (lo < hi) {
            Py_ssize_t mid = lo + (hi - lo) / 2;
            uint64_t v;
            if (!u64_of(PyList_GET_ITEM(starts, mid), &v)) goto decline;
            if (addr < v)
                hi = mid;
            else
                lo = mid + 1;
        }
        if (lo > 0) {
            PyObject *va = PyDict_GetItemWithError(args[1], PyList_GET_ITEM(starts, lo - 1));
            uint64_t e;
            if (va == NULL) {
                if (PyErr_Occurred()) goto done;
                goto decline; /* not as the beliefs keep them */
            }
            if (Py_TYPE(va) != va_type || !u64_of(SLOT(va, off_end), &e)) goto decline;
            if (addr < e) {
                out = rd_loc(&rd_s_parked, "parked", va, 1);
                goto done;
            }
        }
    }
    out = Py_NewRef(Py_False);
    goto done;
decline:
    out = Py_NewRef(Py_None);
done:
    ctx_release(&c);
    return out;
}

/* --- _shrinker_explains: the lowest fit with every pool back in the tree ------------ */
typedef struct {
    uint64_t s, e;
} rd_span;

static int rd_span_cmp(const void *a, const void *b) {
    const rd_span *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    return x->e < y->e ? -1 : x->e > y->e;
}

typedef struct {
    uint64_t vstart, vend, size, mask, addr;
    u128 length;
    uint64_t align;
} rd_fit;

/* decides(start, end): -1 when the range is too short, else whether the search ends
 * at the kernel's address. */
static inline int rd_decides(const rd_fit *f, uint64_t start, uint64_t end) {
    uint64_t lo = start > f->vstart ? start : f->vstart;
    if (end < lo || (u128)(end - lo) < f->length) return -1;
    uint64_t nva = (lo + f->align - 1) & f->mask; /* mod 2^64, as the mask is below it */
    uint64_t top = end < f->vend ? end : f->vend;
    return nva == f->addr && (u128)nva + f->size <= top;
}

/* shrink_fit(root, nodes, vstart, vend, size, align, length, mask, addr) -> bool | None:
 * _shrinker_explains' walk: the free tree's blocks (ascending) merged with every
 * pooled area of `nodes` (sorted), touching spans joined; the first joined range
 * `length` fits in decides. None: a node or value this walk does not read (the
 * Python walk then runs; nothing is changed either way). */
static PyObject *rd_shrink_fit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "shrink_fit(root, nodes: list, vstart, vend, size, align, length, mask, addr)");
        return NULL;
    }
    if (va_type == NULL || rbroot_type == NULL || !PyObject_TypeCheck(args[0], rbroot_type))
        Py_RETURN_NONE;
    rd_fit f;
    if (!u64_of(args[2], &f.vstart) || !u64_of(args[3], &f.vend) || !u64_of(args[4], &f.size) ||
        !u64_of(args[5], &f.align) || !u64_of(args[7], &f.mask) || !u64_of(args[8], &f.addr))
        Py_RETURN_NONE;
    uint64_t len64;
    if (!u64_of(args[6], &len64)) Py_RETURN_NONE;
    f.length = len64;
    /* the pooled areas, sorted */
    static PyObject *s_pools = NULL;
    if (!s_pools && !(s_pools = PyUnicode_InternFromString("pools"))) return NULL;
    Py_ssize_t np = 0, cap = 64;
    rd_span *pooled = PyMem_Malloc((size_t)cap * sizeof(rd_span));
    PyObject *result = NULL;
    if (pooled == NULL) return PyErr_NoMemory();
    int decline = 0;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(args[1]) && !decline; k++) {
        PyObject *pools = PyObject_GetAttr(PyList_GET_ITEM(args[1], k), s_pools);
        if (pools == NULL) goto out;
        if (!PyDict_Check(pools)) {
            Py_DECREF(pools);
            decline = 1;
            break;
        }
        Py_ssize_t pos = 0;
        PyObject *key, *pool;
        while (!decline && PyDict_Next(pools, &pos, &key, &pool)) {
            PyObject *it = PyObject_GetIter(pool), *va;
            if (it == NULL) {
                Py_DECREF(pools);
                goto out;
            }
            while ((va = PyIter_Next(it)) != NULL) {
                rd_span sp;
                int ok = PyObject_TypeCheck(va, va_type) && u64_of(SLOT(va, off_start), &sp.s) &&
                         u64_of(SLOT(va, off_end), &sp.e);
                Py_DECREF(va);
                if (!ok) {
                    decline = 1;
                    break;
                }
                if (np == cap) {
                    rd_span *bigger = PyMem_Realloc(pooled, (size_t)(cap *= 2) * sizeof(rd_span));
                    if (bigger == NULL) {
                        Py_DECREF(it);
                        Py_DECREF(pools);
                        PyErr_NoMemory();
                        goto out;
                    }
                    pooled = bigger;
                }
                pooled[np++] = sp;
            }
            Py_DECREF(it);
            if (PyErr_Occurred()) {
                Py_DECREF(pools);
                goto out;
            }
        }
        Py_DECREF(pools);
    }
    if (decline) {
        result = Py_NewRef(Py_None);
        goto out;
    }
    qsort(pooled, (size_t)np, sizeof(rd_span), rd_span_cmp);
    /* the free blocks in order (an explicit stack: a red-black tree's height is at most
     * twice log2 of its size), merged with the pooled spans, free first on a tie */
    PyObject *stack[160];
    int depth = 0;
    PyObject *node = get_node(args[0], off_root);
    Py_ssize_t pi = 0;
    int have = 0, found = -1;
    uint64_t cs = 0, ce = 0;
    for (;;) {
        while (node != NULL) {
            if (depth == 160 || !PyObject_TypeCheck(node, va_type)) {
                result = Py_NewRef(Py_None);
                goto out;
            }
            stack[depth++] = node;
            node = get_node(node, off_left);
        }
        rd_span sp;
        int from_tree = 0;
        if (depth > 0) {
            PyObject *top = stack[depth - 1];
            if (!u64_of(SLOT(top, off_start), &sp.s) || !u64_of(SLOT(top, off_end), &sp.e)) {
                result = Py_NewRef(Py_None);
                goto out;
            }
            from_tree = pi >= np || rd_span_cmp(&sp, &pooled[pi]) <= 0;
            if (from_tree) {
                depth--;
                node = get_node(top, off_right);
            }
        }
        if (!from_tree) {
            if (pi >= np) break; /* both done */
            sp = pooled[pi++];
        }
        if (have && ce == sp.s) {
            ce = sp.e;
            continue;
        }
        if (have && (found = rd_decides(&f, cs, ce)) >= 0) break;
        cs = sp.s;
        ce = sp.e;
        have = 1;
    }
    if (found < 0 && have) found = rd_decides(&f, cs, ce);
    result = Py_NewRef(found > 0 ? Py_True : Py_False);
out:
    PyMem_Free(pooled);
    return result;
}

/* ======================================================= end of replay divergence section */
