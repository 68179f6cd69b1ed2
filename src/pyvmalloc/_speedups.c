/*
 * pyvmalloc._speedups: the compiled accelerator for the red-black tree and the vmap
 * allocator's tree walks. The pure-Python code (rbtree.py, vmap/area.py,
 * vmap/freetree.py, vmap/placement.py, vmap/space.py) is the reference; every function
 * here does exactly what its Python twin does, step for step, on the same Python node
 * objects (heapq/_heapq pattern). Set PYVMALLOC_PURE=1 to run the reference instead.
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
    u128 vstart = vstart64;
    u128 length = adjust ? (u128)size + align - 1 : (u128)size;
    u128 mask = (u128)(~(align - 1) & umax);
    long visits = 0;
    uint64_t s, e, m;
#define FITS(n_s, n_e)                                                          \
    ({                                                                          \
        u128 base_ = (u128)(n_s) > vstart ? (u128)(n_s) : vstart;              \
        u128 nva_ = (base_ + align - 1) & mask;                                 \
        u128 end_ = nva_ + size;                                                \
        end_ <= umax && nva_ >= vstart && end_ <= (u128)(n_e);                  \
    })
#define BOUNDS(n)                                                               \
    if (!PyObject_TypeCheck((n), va_type) || !va_bounds((n), &s, &e)) goto slow
#define SMS(n) \
    if (!PyObject_TypeCheck((n), va_type) || !u64_of(SLOT((n), off_sms), &m)) goto slow
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
    if (found == NULL) found = Py_None;
    Py_INCREF(found); /* before add_visits, which may run Python code */
    if (add_visits(tree, visits) < 0) {
        Py_DECREF(found);
        return NULL;
    }
    return found;
slow:
    if (PyErr_Occurred()) return NULL;
    return call_reference_lowest(args);
#undef FITS
#undef BOUNDS
#undef SMS
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

/* merge_or_add(root, va, each_step) -> (block, nr_free delta) or (None, other) on
 * overlap; OverflowError (before any change) for values past 64 bits. */
static PyObject *sp_merge_or_add(PyObject *self, PyObject *args) {
    PyObject *root, *va;
    int each_step;
    uint64_t vs, ve;
    links_t L;
    grave_t g;
    g.n = 0;
    if (!PyArg_ParseTuple(args, "OOp", &root, &va, &each_step)) return NULL;
    if (state_ready() < 0 || check_root(root) < 0 || check_va(va) < 0 ||
        check_node(va, "va") < 0)
        return NULL;
    if (!va_bounds(va, &vs, &ve)) goto overflow;
    int rc = descend_links(get_node(root, off_root), vs, ve, &L);
    if (rc < 0) goto overflow;
    if (rc == 1) return Py_BuildValue("(OO)", Py_None, L.other);
    Py_INCREF(va);
    PyObject *orig = va;
    int merged = 0, delta = 0, err = 0;
    if (L.parent != NULL) {
        if (L.next != NULL && L.next_start == ve) {
            set_slot(&g, L.next, off_start, SLOT(va, off_start));
            if (each_step && free_propagate(L.next, NULL) < 0) { err = 1; goto out; }
            set_state(&g, va, st_detached);
            va = L.next;
            merged = 1;
        }
        if (L.prev != NULL && L.prev_end == vs) {
            /* prev.va_end == va.va_start (after a merge with next, next starts at vs) */
            if (each_step) {
                set_slot(&g, L.prev, off_end, SLOT(va, off_end));
                if (free_propagate(L.prev, NULL) < 0) { err = 1; goto out; }
                if (merged) {
                    if (free_unlink(&g, root, va) < 0) { err = 1; goto out; }
                    delta -= 1;
                }
            } else {
                if (merged) {
                    if (free_unlink(&g, root, va) < 0) { err = 1; goto out; }
                    delta -= 1;
                }
                set_slot(&g, L.prev, off_end, SLOT(va, off_end));
            }
            set_state(&g, va, st_detached);
            va = L.prev;
            merged = 1;
        }
    }
    if (!merged) {
        if (free_link(&g, root, va, L.parent, L.left) < 0) { err = 1; goto out; }
        delta += 1;
    } else if (!each_step) {
        if (free_propagate(va, NULL) < 0) { err = 1; goto out; }
    }
out:
    flush(&g);
    Py_DECREF(orig);
    if (err) return NULL;
    return Py_BuildValue("(Oi)", va, delta);
overflow:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_OverflowError, "free tree values do not fit unsigned long");
    return NULL;
}

/* va_clip(root, va, nva, size, fits) -> nr_free delta (int); None for NOTHING_FIT
 * (nothing changed: the caller's reference path warns); (lva, other) when the NE
 * split's left part overlaps a block (the caller complains). */
static PyObject *sp_va_clip(PyObject *self, PyObject *args) {
    PyObject *root, *va, *nva_o, *size_o, *fits;
    uint64_t vs, ve, nva, size;
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
    u128 nva_end = (u128)nva + size;
    int fit;
    if (nva < vs || nva_end > ve) Py_RETURN_NONE; /* NOTHING_FIT */
    if (vs == nva) fit = ((u128)ve == nva_end) ? 1 : 2; /* FL : LE */
    else if ((u128)ve == nva_end) fit = 3;             /* RE */
    else fit = 4;                                      /* NE */
    if (PyList_GET_SIZE(fits) <= fit) {
        PyErr_SetString(PyExc_IndexError, "stats.fits is too short");
        return NULL;
    }
    PyObject *one = PyLong_FromLong(1);
    PyObject *cnt = one ? PyNumber_Add(PyList_GET_ITEM(fits, fit), one) : NULL;
    Py_XDECREF(one);
    if (!cnt) return NULL;
    PyList_SetItem(fits, fit, cnt); /* steals cnt */
    Py_INCREF(va);
    PyObject *result = NULL;
    if (fit == 2 || fit == 4) {
        PyObject *lva = NULL;
        if (fit == 4) {
            lva = PyObject_CallFunctionObjArgs((PyObject *)va_type, SLOT(va, off_start), nva_o,
                                               NULL);
            if (!lva) goto out;
        }
        PyObject *end_o = PyLong_FromUnsignedLongLong((unsigned long long)(uint64_t)nva_end);
        if (!end_o) { Py_XDECREF(lva); goto out; }
        set_slot(&g, va, off_start, end_o);
        Py_DECREF(end_o);
        if (free_propagate(va, NULL) < 0) { Py_XDECREF(lva); goto out; }
        if (fit == 2) {
            result = PyLong_FromLong(0);
        } else {
            links_t L;
            int rc = descend_links(va, vs, nva, &L);
            if (rc < 0) { /* not OverflowError: va was already changed */
                PyErr_SetString(PyExc_RuntimeError, "va_clip: free tree values past 64 bits");
            } else if (rc == 1) {
                result = Py_BuildValue("(OO)", lva, L.other);
            } else if (free_link(&g, root, lva, L.parent, L.left) == 0) {
                result = PyLong_FromLong(1);
            }
            Py_DECREF(lva);
        }
    } else if (fit == 1) {
        if (free_unlink(&g, root, va) == 0) result = PyLong_FromLong(-1);
    } else { /* RE */
        set_slot(&g, va, off_end, nva_o);
        if (free_propagate(va, NULL) == 0) result = PyLong_FromLong(0);
    }
out:
    flush(&g);
    Py_DECREF(va);
    return result;
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

/* speedvm section (defined at the end of the file) */
static PyObject *vm_phys_prep_bulk(PyObject *, PyObject *);
static PyObject *vm_phys_free_bulk_mark(PyObject *, PyObject *);
static PyObject *vm_deque_popleft_into(PyObject *, PyObject *);
static PyObject *vm_pte_fill(PyObject *, PyObject *);
static PyObject *vm_init_trace_events(PyObject *, PyObject *);
static PyObject *vm_parse_tracefs(PyObject *, PyObject *);

static PyMethodDef methods[] = {
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
    if (!s_root || !s_ulong_max || !s_stats || !s_search_visits || !s_rotate || !s_copy ||
        !s_propagate)
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
