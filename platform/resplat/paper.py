"""The published numbers of He et al. 2015, "Deep Residual Learning for Image Recognition".

Plain data, keyed by (family, depth, shortcut), so that reports can put the paper's
result beside ours. All values are error rates in percent.

Where each number comes from (arXiv:1512.03385):

- CIFAR-10, family "cifar": Table 6, "Classification error on the CIFAR-10 test
  set". ResNets with option A shortcuts (zero-padding identity, no extra parameters).
  Single-model test error; for ResNet-110 the paper reports the best of 5 runs
  (6.43; mean 6.61 +- 0.16). The paper gives no table numbers for plain CIFAR nets
  (only curves, Figure 6), so there are none here.
- ImageNet, family "imagenet": top-1 / top-5 error on the ImageNet validation set,
  10-crop testing.
  - Table 2 (top-1 only): plain-18, plain-34 and ResNet-18/34 with option A, which
    add no parameters over their plain counterparts.
  - Table 3 (top-1 and top-5): plain-34; ResNet-34 with options A, B and C;
    ResNet-50/101/152, which use option B (projections only where dimensions grow).
    Table 3's plain-34 and ResNet-34 A match Table 2's top-1 numbers.

Our own runs are usually evaluated on a single centre crop, so the ImageNet numbers
are a reference point rather than an exact target.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperResult:
    top1_error: float
    top5_error: float | None
    source: str


CIFAR10_TABLE6 = "Table 6 (CIFAR-10 test error)"
IMAGENET_TABLE2 = "Table 2 (ImageNet val, 10-crop)"
IMAGENET_TABLE3 = "Table 3 (ImageNet val, 10-crop)"

# (family, depth, shortcut) -> result; shortcut "none" is a plain net.
PAPER_RESULTS: dict[tuple[str, int, str], PaperResult] = {
    ("cifar", 20, "A"): PaperResult(8.75, None, CIFAR10_TABLE6),
    ("cifar", 32, "A"): PaperResult(7.51, None, CIFAR10_TABLE6),
    ("cifar", 44, "A"): PaperResult(7.17, None, CIFAR10_TABLE6),
    ("cifar", 56, "A"): PaperResult(6.97, None, CIFAR10_TABLE6),
    ("cifar", 110, "A"): PaperResult(6.43, None, CIFAR10_TABLE6),
    ("cifar", 1202, "A"): PaperResult(7.93, None, CIFAR10_TABLE6),
    ("imagenet", 18, "none"): PaperResult(27.94, None, IMAGENET_TABLE2),
    ("imagenet", 18, "A"): PaperResult(27.88, None, IMAGENET_TABLE2),
    ("imagenet", 34, "none"): PaperResult(28.54, 10.02, IMAGENET_TABLE3),
    ("imagenet", 34, "A"): PaperResult(25.03, 7.76, IMAGENET_TABLE3),
    ("imagenet", 34, "B"): PaperResult(24.52, 7.46, IMAGENET_TABLE3),
    ("imagenet", 34, "C"): PaperResult(24.19, 7.40, IMAGENET_TABLE3),
    ("imagenet", 50, "B"): PaperResult(22.85, 6.71, IMAGENET_TABLE3),
    ("imagenet", 101, "B"): PaperResult(21.75, 6.05, IMAGENET_TABLE3),
    ("imagenet", 152, "B"): PaperResult(21.43, 5.71, IMAGENET_TABLE3),
}


def paper_result(family: str, depth: int, shortcut: str) -> PaperResult | None:
    """The paper's result for this network, or None where the paper has no number."""
    return PAPER_RESULTS.get((family, depth, shortcut))


def paper_shortcuts(family: str, depth: int) -> list[str]:
    """The shortcut options the paper reports for this family and depth."""
    return [s for (f, d, s) in PAPER_RESULTS if f == family and d == depth]
