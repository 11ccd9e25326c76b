"""Backend implementations behind one internal interface.

Each backend module (``cpu``, ``numpy_impl``, and ``numbaent._cuda.device.Device`` for the GPU)
provides these functions (the op bodies call them as ``sp.k.<name>``, see ``numbaent._op``). A fault
is None, or (first faulty row, value): the op body raises the error of the message table. Inputs
are validated 2-D arrays (rows x classes, C-contiguous, dtype float16, bfloat16, float32 or
float64); ``q``/``xq`` may have a single row shared by every row; ``y`` is int64 (rows,);
``weight`` is None or a float array (C,). Outputs are preallocated by the caller in the math
dtype (float64 if an input is float64, else float32) and filled in place.

==========================================================  ========================================
``entropy(p, normalize, out)``                              -> fault (row, 1): p < 0 in that row
``cross_entropy / kl_divergence / js_divergence``           ``(p, q, normalize, out)``, fault 2: q<0
``logsumexp(x, out)``, ``softmax_entropy(x, out)``          out (rows,)
``log_softmax(x, out)``, ``softmax(x, out)``                out (rows, C)
``ce_labels(x, y, weight, ignore_index, eps, inv_t, out)``  -> (row weights, fault: (row, label))
``ce_soft(x, t, weight, eps, inv_t, out)``                  per-row loss, weight folded in
``softmax_kl(xp, xq, inv_t, out)``                          D(softmax(xp/T) || softmax(xq/T))
``score(x, y, ignore_index, teacher, inv_t, outs)``         fills the arrays in ``outs``; -> fault
==========================================================  ========================================
"""

import numpy as np


def first_fault(flags, values=None):
    """The row fault the validation layer raises for: None, or (first flagged row, its flag or
    ``values[row]``, e.g. the bad label)."""
    hit = np.flatnonzero(flags)
    if hit.size == 0:
        return None
    i = int(hit[0])
    return i, int(flags[i] if values is None else values[i])
