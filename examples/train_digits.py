"""Train a 64-128-10 network on scikit-learn's bundled digits (no download).

    python examples/train_digits.py [--epochs 30] [--batch-size 32]
                                    [--threads N] [--repeats 5]
                                    [--png digits_loss.png]

Trains the same network twice from the same initial weights, on the same
mini-batches with the same optimizer: once with fastmm.nn, once written in
plain numpy (x @ w + b, np.maximum, a hand-written backward). Prints a progress
bar, the test accuracy and the time per epoch of each, and saves the loss
curves as a PNG (if matplotlib is installed).

Then quantizes the trained model for inference (fastmm.nn.quantize: bf16 and
int8) and prints, for float32, bf16 and int8 side by side, the test accuracy
and the time of predict on the whole test set in one batch and in batches of
256 rows (best of --repeats timings).

Needs scikit-learn (pip install scikit-learn); matplotlib for the PNG.
"""
import argparse
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastmm
import fastmm.nn as nn

try:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
except ImportError:
    sys.exit("this example needs scikit-learn: pip install scikit-learn")


class NumpyNet:
    """The same network, optimizer and loss in plain numpy: the baseline."""

    def __init__(self, weights, lr, momentum):
        self.params = [p.copy() for p in weights]      # W1, b1, W2, b2
        self.vel = [np.zeros_like(p) for p in self.params]
        self.lr, self.momentum = lr, momentum

    def forward(self, x):
        W1, b1, W2, b2 = self.params
        h = np.maximum(x @ W1 + b1, 0)
        z = h @ W2 + b2
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return h, e / e.sum(axis=1, keepdims=True)

    def step(self, x, labels):
        W1, b1, W2, b2 = self.params
        h, p = self.forward(x)
        n = len(x)
        loss = -np.log(np.maximum(p[np.arange(n), labels],
                                  np.finfo(p.dtype).tiny)).mean()
        g2 = p.copy()
        g2[np.arange(n), labels] -= 1
        g2 /= n
        g1 = (g2 @ W2.T) * (h > 0)
        grads = [x.T @ g1, g1.sum(0), h.T @ g2, g2.sum(0)]
        for p_, v, g in zip(self.params, self.vel, grads):
            v *= self.momentum
            v -= self.lr * g
            p_ += v
        return float(loss)


def train_numpy(net, X, y, epochs, batch_size, orders):
    losses, times = [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        total = 0.0
        for i in range(0, len(X), batch_size):
            idx = orders[epoch][i:i + batch_size]
            total += net.step(X[idx], y[idx]) * len(idx)
        times.append(time.perf_counter() - start)
        losses.append(total / len(X))
    return losses, times


def best_time(f, repeats):
    """Seconds per call of f(): the best of ``repeats`` timings, each of
    enough calls to last about 20 ms."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            f()
        if time.perf_counter() - start > 0.02:
            break
        calls *= 2
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            f()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def compare_quantized(model, X_test, y_test, repeats):
    """Accuracy and inference time of float32, bf16 and int8 side by side."""
    models = {"float32": model, "bf16": nn.quantize(model, "bf16"),
              "int8": nn.quantize(model, "int8")}
    n = len(X_test)
    print(f"\ninference: predict on the {n} test rows, one batch of {n} or "
          f"batches of 256 (best of {repeats}; speed-up = float32's time / "
          f"this one's)")
    print(f"{'':9}{'accuracy':>9}{'change':>10}{'batch ' + str(n):>12}"
          f"{'speed-up':>10}{'batch 256':>12}{'speed-up':>10}{'weights':>12}")
    base, worst = None, 0.0
    for name, m in models.items():
        acc = (m.predict(X_test).argmax(1) == y_test).mean()
        t = [best_time(lambda: m.predict(X_test), repeats),
             best_time(lambda: m.predict(X_test, batch_size=256), repeats)]
        weights = (m.nbytes if name != "float32" else
                   sum(p.nbytes for p, _ in m.parameters()))
        if base is None:
            base, t_base = acc, t
        cols = "".join(f"{ti * 1e6:9.0f} us{tb / ti:9.2f}x"
                       for ti, tb in zip(t, t_base))
        print(f"{name:9}{acc:9.2%}{(acc - base) * 100:+7.2f} pt{cols}"
              f"{weights / 1024:8.1f} KiB")
        worst = max(worst, (base - acc) * 100)
    if worst > 0.5:
        print(f"quantization lost {worst:.2f} accuracy points (more than "
              f"the 0.5 expected)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for fastmm and for numpy's BLAS alike")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timings per inference measurement (best is shown)")
    ap.add_argument("--png", default="digits_loss.png")
    args = ap.parse_args()

    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(
        X, digits.target, test_size=0.25, random_state=0,
        stratify=digits.target)

    model = nn.Sequential([nn.Dense(64, 128, "relu", seed=0),
                           nn.Dense(128, 10, "softmax", seed=1)])
    start_weights = [a.copy() for layer in model.layers
                     for a in (layer.W, layer.b)]
    # both trainers see the same mini-batches in the same order
    rng = np.random.default_rng(0)
    orders = [rng.permutation(len(X_train)) for _ in range(args.epochs)]

    with fastmm.threads(args.threads), threadpool_limits(args.threads,
                                                         user_api="blas"):
        print(f"fastmm.nn: {model}  ({args.threads} thread(s), "
              f"kernel {fastmm.driver._packed.kernel_info()['name']})")
        # fit shuffles with default_rng(seed).permutation, once per epoch:
        # seed=0 reproduces `orders`
        history = model.fit(X_train, y_train, epochs=args.epochs,
                            batch_size=args.batch_size, seed=0,
                            optimizer=nn.SGD(lr=args.lr, momentum=0.9))
        acc = (model.predict(X_test).argmax(1) == y_test).mean()

        print("plain numpy: the same network, batches and optimizer")
        net = NumpyNet(start_weights, args.lr, 0.9)
        np_losses, np_times = train_numpy(net, X_train, y_train, args.epochs,
                                          args.batch_size, orders)
        np_acc = (net.forward(X_test)[1].argmax(1) == y_test).mean()

    t_fm, t_np = min(history["epoch_time"]), min(np_times)
    m_fm, m_np = np.median(history["epoch_time"]), np.median(np_times)
    print(f"\ntest accuracy   fastmm.nn {acc:.2%}   numpy {np_acc:.2%}")
    print(f"time per epoch  fastmm.nn {t_fm * 1e3:.1f} ms   numpy "
          f"{t_np * 1e3:.1f} ms   (best epoch; numpy/fastmm = "
          f"{t_np / t_fm:.2f}x)")
    print(f"                fastmm.nn {m_fm * 1e3:.1f} ms   numpy "
          f"{m_np * 1e3:.1f} ms   (median epoch; numpy/fastmm = "
          f"{m_np / m_fm:.2f}x)")
    print(f"total training  fastmm.nn {sum(history['epoch_time']):.2f} s   "
          f"numpy {sum(np_times):.2f} s")

    with fastmm.threads(args.threads), threadpool_limits(args.threads,
                                                         user_api="blas"):
        compare_quantized(model, X_test, y_test, args.repeats)

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no loss-curve PNG "
              "(pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, args.epochs + 1)
    ax.plot(epochs, history["loss"], label="fastmm.nn")
    ax.plot(epochs, np_losses, "--", label="plain numpy")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training cross-entropy")
    ax.set_yscale("log")
    ax.set_title(f"digits 64-128-10, test accuracy {acc:.1%}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.png, dpi=100)
    print(f"loss curves saved to {args.png}")


if __name__ == "__main__":
    main()
