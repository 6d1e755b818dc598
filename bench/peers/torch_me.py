#!/usr/bin/python3
"""Dense mixture of experts in PyTorch (CPU, float64), trained by Adam.

    /usr/bin/python3 bench/peers/torch_me.py DATA.csv [--k 8] [--tol 1e-6] [--seed 1]
        [--lr 0.05] [--window 10] [--max-epochs 5000] [--threads 0] [--target-loglik L]

Model: softmax gate linear in x (K logits), K linear Gaussian experts
(mean w_k.x + b_k, each with its own log-variance); the loss is the mixture
negative log-likelihood, summed over rows via log-sum-exp.  What a
reasonable user would write: torch.nn.Linear default init, raw inputs,
full-batch Adam (every epoch is one step on all N rows), lr 0.05.

Stop (first that holds):
  * --target-loglik L: the training log-likelihood reached L (to time
    "how long to reach the same optimum");
  * the loss decreased by at most tol * |loss| over the last `window` epochs;
  * max-epochs.
Prints one JSON line: seconds (training loop only, not reading the CSV),
epochs, the final training loglik (sum over rows of log densities, the
flexmix convention, including -log(2 pi)/2), threads used.
"""
import argparse
import json
import math
import sys
import time

try:
    import numpy as np
    import torch
except ImportError as e:
    sys.exit(f"torch_me.py: {e.name} is missing (apt-get install python3-torch python3-numpy; "
             "run with Debian's /usr/bin/python3)")

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("data")
ap.add_argument("--k", type=int, default=8)
ap.add_argument("--tol", type=float, default=1e-6)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--lr", type=float, default=0.05)
ap.add_argument("--window", type=int, default=10)
ap.add_argument("--max-epochs", type=int, default=5000)
ap.add_argument("--threads", type=int, default=0, help="0 = torch's default")
ap.add_argument("--target-loglik", type=float, default=None)
a = ap.parse_args()

try:
    f = open(a.data)
except OSError as e:
    sys.exit(f"torch_me.py: {e}")
with f:
    names = f.readline().strip().split(",")
if "y" not in names:
    sys.exit(f"torch_me.py: no column 'y' in {a.data}")
m = np.loadtxt(a.data, delimiter=",", skiprows=1, dtype=np.float64)
iy = names.index("y")
X = torch.from_numpy(np.ascontiguousarray(np.delete(m, iy, axis=1)))
y = torch.from_numpy(np.ascontiguousarray(m[:, iy])).unsqueeze(1)
n, d = X.shape

if a.threads > 0:
    torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
torch.set_default_dtype(torch.float64)
gate = torch.nn.Linear(d, a.k)
expert = torch.nn.Linear(d, a.k)          # column k = mean of expert k
log_var = torch.nn.Parameter(torch.zeros(a.k))
opt = torch.optim.Adam([*gate.parameters(), *expert.parameters(), log_var], lr=a.lr)
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def nll():
    logp_gate = torch.log_softmax(gate(X), dim=1)
    r = y - expert(X)
    logp_y = -0.5 * (r * r) * torch.exp(-log_var) - 0.5 * log_var - HALF_LOG_2PI
    return -torch.logsumexp(logp_gate + logp_y, dim=1).sum()


hist = []                             # hist[t] = loss after t Adam steps
stop = "max-epochs"
t0 = time.perf_counter()
while True:
    opt.zero_grad()
    loss = nll()
    hist.append(loss.item())
    if a.target_loglik is not None and -hist[-1] >= a.target_loglik:
        stop = "target"
        break
    if len(hist) > a.window and hist[-1 - a.window] - hist[-1] <= a.tol * abs(hist[-1]):
        stop = "tol"
        break
    if len(hist) > a.max_epochs:
        break
    loss.backward()
    opt.step()
secs = time.perf_counter() - t0

out = {"system": "torch", "seconds": round(secs, 3), "epochs": len(hist) - 1,
       "loglik": -hist[-1], "stop": stop, "converged": stop == "tol",
       "threads": torch.get_num_threads(), "lr": a.lr, "tol": a.tol, "window": a.window,
       "seed": a.seed, "torch": torch.__version__}
if a.target_loglik is not None:
    out.update(target_loglik=a.target_loglik, reached=stop == "target")
print(json.dumps(out))
