"""Triangle-mesh utilities used to build the default face model (numpy / scipy.sparse).

Meshes are ``vertices`` [V, 3] float64 and ``triangles`` [F, 3] int64, counter-clockwise
seen from outside. Everything here is deterministic: no random starts, no hash ordering.

The field toolkit the default model's blendshapes are made of:

* :func:`harmonic_fill`: solve the Laplace equation on the mesh with Dirichlet values
  on some vertices. Because it lives on the mesh, a value set on the lower lip does
  not cross the mouth slit (a hole) to the upper lip, as a Euclidean radius would.
* :func:`smoothstep`: remaps a [0, 1] weight so its slope vanishes at 0 and 1, which
  hides the crease a harmonic field has where it meets its constraints.
* :func:`wendland_c2`: a compactly supported, C2-smooth radial falloff for local bulges.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla

__all__ = [
    "unique_edges", "edge_midpoint_ids", "subdivide_midpoint", "cut_components", "order_cycle",
    "order_chain", "refine_path", "boundary_loops", "face_normals", "vertex_normals",
    "cotangent_laplacian", "lumped_mass", "harmonic_fill", "edge_graph", "edge_distance", "edge_path", "smoothstep",
    "wendland_c2", "laplacian_eigenfunctions",
]


# ------------------------------------------------------------------ topology
def unique_edges(triangles: np.ndarray) -> np.ndarray:
    """Undirected edges [E, 2] (smaller id first), sorted lexicographically."""
    e = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def edge_midpoint_ids(edges: np.ndarray, first_id: int) -> dict[tuple[int, int], int]:
    """Map (a, b) and (b, a) to the id ``first_id + k`` of the midpoint of ``edges[k]``."""
    ids = {}
    for k, (a, b) in enumerate(edges.tolist()):
        ids[(a, b)] = ids[(b, a)] = first_id + k
    return ids


def subdivide_midpoint(vertices: np.ndarray, triangles: np.ndarray,
                       attributes: tuple[np.ndarray, ...] = ()) -> tuple[np.ndarray, np.ndarray, tuple, np.ndarray]:
    """One step of linear (midpoint) 1-to-4 subdivision.

    Old vertices keep their ids and positions; the midpoint of ``edges[k]`` gets id V + k.

    Args:
        vertices: [V, 3].
        triangles: [F, 3].
        attributes: per-vertex arrays [V, ...] (e.g. UVs), interpolated linearly.
    Returns:
        (vertices [V + E, 3], triangles [4F, 3] with the same orientation, attributes
        [V + E, ...], edges [E, 2] whose midpoints were added).
    """
    edges = unique_edges(triangles)
    mid = edge_midpoint_ids(edges, len(vertices))
    a, b, c = triangles.T
    ab = np.array([mid[k] for k in zip(a.tolist(), b.tolist())])
    bc = np.array([mid[k] for k in zip(b.tolist(), c.tolist())])
    ca = np.array([mid[k] for k in zip(c.tolist(), a.tolist())])
    # Four children per parent, each child listed right after its siblings.
    tris = np.stack([np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))], 1)
    new_v = np.concatenate([vertices, 0.5 * (vertices[edges[:, 0]] + vertices[edges[:, 1]])])
    new_attr = tuple(np.concatenate([x, 0.5 * (x[edges[:, 0]] + x[edges[:, 1]])]) for x in attributes)
    return new_v, tris.reshape(-1, 3), new_attr, edges


def cut_components(triangles: np.ndarray, cut_edges: np.ndarray) -> np.ndarray:
    """Connected components of triangles, where two triangles touch across a shared edge
    that is not in ``cut_edges`` [C, 2]. Returns labels [F] (component of triangle 0 is 0)."""
    f = len(triangles)
    cut = {tuple(e) for e in np.sort(cut_edges, axis=1).tolist()}
    owner: dict[tuple[int, int], list[int]] = {}
    for i, t in enumerate(triangles.tolist()):
        for k in range(3):
            e = tuple(sorted((t[k], t[(k + 1) % 3])))
            owner.setdefault(e, []).append(i)
    pairs = [fs for e, fs in owner.items() if len(fs) == 2 and e not in cut]
    pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    adj = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(f, f))
    return csgraph.connected_components(adj, directed=False)[1]


def _neighbours(edges: np.ndarray) -> dict[int, list[int]]:
    nb: dict[int, list[int]] = {}
    for a, b in np.asarray(edges).tolist():
        nb.setdefault(a, []).append(b)
        nb.setdefault(b, []).append(a)
    return nb


def order_cycle(edges: np.ndarray, start: int, toward: int) -> list[int]:
    """The vertices of a simple cycle given as unordered edges [N, 2], from ``start``
    through its neighbour ``toward`` around the cycle (``start`` not repeated at the end)."""
    nb = _neighbours(edges)
    if any(len(n) != 2 for n in nb.values()) or toward not in nb[start]:
        raise ValueError("edges are not a simple cycle through start and toward")
    out, prev, cur = [start], start, toward
    while cur != start:
        out.append(cur)
        prev, cur = cur, next(n for n in nb[cur] if n != prev)
    if len(out) != len(nb):
        raise ValueError("edges form more than one cycle")
    return out


def order_chain(edges: np.ndarray, start: int) -> list[int]:
    """The vertices of a simple open chain given as unordered edges [N, 2], from ``start``."""
    nb = _neighbours(edges)
    if len(nb[start]) != 1 or any(len(n) > 2 for n in nb.values()):
        raise ValueError("edges are not a simple chain ending at start")
    out, prev = [start], -1
    while True:
        nxt = [n for n in nb[out[-1]] if n != prev]
        if not nxt:
            return out
        prev = out[-1]
        out.append(nxt[0])


def refine_path(path: list[int], midpoint_ids: dict[tuple[int, int], int], closed: bool) -> list[int]:
    """A vertex path after :func:`subdivide_midpoint`: the edge midpoints inserted in order."""
    out = []
    pairs = zip(path, path[1:] + path[:1] if closed else path[1:])
    for a, b in pairs:
        out += [a, midpoint_ids[(a, b)]]
    return out if closed else out + [path[-1]]


def boundary_loops(triangles: np.ndarray) -> list[list[int]]:
    """Boundary loops, each ordered along its triangles' edge direction (so the surface
    lies on the left), starting at its smallest vertex id; sorted by that id."""
    directed = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    undirected = {}
    for a, b in directed.tolist():
        undirected[(min(a, b), max(a, b))] = undirected.get((min(a, b), max(a, b)), 0) + 1
    nxt = {a: b for a, b in directed.tolist() if undirected[(min(a, b), max(a, b))] == 1}
    loops, seen = [], set()
    for s in sorted(nxt):
        if s in seen:
            continue
        loop = [s]
        while nxt[loop[-1]] != s:
            loop.append(nxt[loop[-1]])
        seen.update(loop)
        loops.append(loop)
    return loops


# ------------------------------------------------------------------ geometry
def face_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit triangle normals [F, 3] (works on [..., V, 3] batches too)."""
    v = vertices[..., triangles, :]
    n = np.cross(v[..., 1, :] - v[..., 0, :], v[..., 2, :] - v[..., 0, :])
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-30)


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals [V, 3]."""
    v = vertices[triangles]
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    out = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(out, triangles[:, k], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-30)


def cotangent_laplacian(vertices: np.ndarray, triangles: np.ndarray) -> sp.csr_matrix:
    """The cotangent Laplacian L = D - W [V, V] (positive semi-definite, rows sum to 0).

    Edge weights (cot a + cot b) / 2 are clamped at 0: the MediaPipe mesh has obtuse
    triangles whose negative weights would break the discrete maximum principle (a
    harmonic weight field could leave [0, 1]).
    """
    n = len(vertices)
    rows, cols, vals = [], [], []
    for k in range(3):
        i, j, o = triangles[:, k], triangles[:, (k + 1) % 3], triangles[:, (k + 2) % 3]
        u, w = vertices[i] - vertices[o], vertices[j] - vertices[o]
        cot = (u * w).sum(1) / np.maximum(np.linalg.norm(np.cross(u, w), axis=1), 1e-30)
        rows += [i, j]
        cols += [j, i]
        vals += [0.5 * cot, 0.5 * cot]
    weights = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(n, n)).tocsr()  # duplicates (the two triangles of an edge) are summed
    weights.data = np.maximum(weights.data, 0.0)
    weights.eliminate_zeros()
    return (sp.diags(np.asarray(weights.sum(1)).ravel()) - weights).tocsr()


def lumped_mass(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Barycentric vertex areas [V] (a third of the area of each incident triangle), mm^2."""
    v = vertices[triangles]
    area = 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)
    mass = np.zeros(len(vertices))
    for k in range(3):
        np.add.at(mass, triangles[:, k], area / 3.0)
    return mass


# ------------------------------------------------------------------ fields
def harmonic_fill(laplacian: sp.csr_matrix, fixed: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Solve L u = 0 on the free vertices with u = ``values`` on the ``fixed`` ones.

    Vertices with no path to a fixed vertex would make the system singular; on the
    connected face mesh every free vertex has one.

    Args:
        laplacian: [V, V] from :func:`cotangent_laplacian`.
        fixed: [N] distinct vertex ids.
        values: [N] or [N, C] prescribed values.
    Returns:
        [V] or [V, C] field.
    """
    fixed = np.asarray(fixed, dtype=np.int64)
    if len(np.unique(fixed)) != len(fixed):
        raise ValueError("fixed vertex ids must be distinct")
    values = np.asarray(values, dtype=np.float64)
    vec = values.reshape(len(fixed), -1)
    n = laplacian.shape[0]
    free = np.setdiff1d(np.arange(n), fixed)
    out = np.zeros((n, vec.shape[1]))
    out[fixed] = vec
    if len(free):
        a = laplacian[free][:, free].tocsc()
        rhs = -(laplacian[free][:, fixed] @ vec)
        out[free] = spla.splu(a).solve(np.ascontiguousarray(rhs))
    return out.reshape((n,) + values.shape[1:])


def edge_graph(vertices: np.ndarray, triangles: np.ndarray) -> sp.csr_matrix:
    """[V, V] symmetric sparse matrix of edge lengths, for :func:`edge_distance` and :func:`edge_path`."""
    e = unique_edges(triangles)
    length = np.linalg.norm(vertices[e[:, 0]] - vertices[e[:, 1]], axis=1)
    return sp.coo_matrix((length, (e[:, 0], e[:, 1])), shape=(len(vertices),) * 2).tocsr()


def edge_distance(graph: sp.csr_matrix, sources: np.ndarray) -> np.ndarray:
    """Shortest distance [V] along mesh edges from the nearest source vertex, mm.

    An upper bound of the geodesic distance that, like it, goes around holes.
    """
    return csgraph.dijkstra(graph, directed=False, indices=np.asarray(sources), min_only=True)


def edge_path(graph: sp.csr_matrix, waypoints: list[int], closed: bool = False) -> list[int]:
    """The vertex path through ``waypoints`` made of shortest edge paths between consecutive
    ones (back to the first when ``closed``, without repeating it at the end)."""
    stops = list(waypoints) + ([waypoints[0]] if closed else [])
    out = [stops[0]]
    for a, b in zip(stops, stops[1:]):
        _, pred = csgraph.dijkstra(graph, directed=False, indices=a, return_predecessors=True)
        leg = [b]
        while leg[-1] != a:
            leg.append(int(pred[leg[-1]]))
        out += leg[-2::-1]
    return out[:-1] if closed else out


def smoothstep(t: np.ndarray) -> np.ndarray:
    """3t^2 - 2t^3 of t clipped to [0, 1]: 0 -> 0, 1 -> 1, zero slope at both ends."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def wendland_c2(r: np.ndarray, radius: float) -> np.ndarray:
    """Wendland's C2 function (1 - q)^4 (4q + 1), q = r / radius: 1 at 0, 0 beyond radius."""
    q = np.clip(np.asarray(r) / radius, 0.0, 1.0)
    return (1.0 - q) ** 4 * (4.0 * q + 1.0)


def laplacian_eigenfunctions(laplacian: sp.csr_matrix, mass: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` lowest generalised eigenpairs of L phi = lambda M phi (M = diag(mass)).

    Dense LAPACK (the default model has ~2k vertices): deterministic, no random start.
    Each eigenvector is M-orthonormal, its sign fixed so that its sum weighted by a ramp over the
    vertex indices (1 to 2) is positive. (Its largest-magnitude entry, the rule before, ties
    between mirrored vertices of a symmetric mesh, so the LAPACK build's rounding chose the sign:
    SciPy 1.17 flipped 15 of the default model's identity modes.)

    Returns:
        (eigenvalues [count], eigenvectors [V, count]).
    """
    vals, vecs = scipy.linalg.eigh(laplacian.toarray(), np.diag(mass), subset_by_index=[0, count - 1])
    ramp = np.linspace(1.0, 2.0, vecs.shape[0])
    return vals, vecs * np.sign(ramp @ vecs)
