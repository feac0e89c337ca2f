"""(b2) MedNeXt's depth-wise convs through visprior's direct/FFT choice vs MONAI's own.

One training step (AdamW, cross entropy over 10 classes) of MedNeXt-S at the demo's width (16
filters), batch 2 of 48^3 crops as the demo draws them, at k 3, 5 and 7:

* ``MONAI``: MONAI's ``MedNeXt`` as it is (``nn.Conv3d`` depth-wise convs);
* ``visprior auto``: ``get_model("mednext_s")``, whose stride-1 depth-wise convs choose direct
  or FFT convolution by size (``conv_algorithm("auto")``, the default).
"""

from __future__ import annotations

import torch

from benchmarks.timing import measure_in_subprocess, measurement_row

KERNELS_FULL = (3, 5, 7)
KERNELS_QUICK = (5,)
VARIANTS = ("MONAI", "visprior auto")
WIDTH, CLASSES, BATCH = 16, 10, 2


def build_step(variant: str, kernel_size: int, size: int):
    from monai.networks.nets import MedNeXt

    import visprior
    from visprior.layers.conv_algorithm import set_conv_algorithm
    from visprior.nets.mednext import MEDNEXT_VARIANTS

    torch.manual_seed(0)
    if variant == "MONAI":
        model = MedNeXt(
            init_filters=WIDTH,
            out_channels=CLASSES,
            kernel_size=kernel_size,
            use_residual_connection=True,
            **MEDNEXT_VARIANTS["S"],
        )
    else:
        set_conv_algorithm("auto")
        model = visprior.get_model(
            "mednext_s", out_channels=CLASSES, feature_size=WIDTH, kernel_size=kernel_size
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(BATCH, 1, size, size, size)
    y = torch.randint(0, CLASSES, (BATCH, size, size, size))

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step, None


def mednext_speed_section(rows: list[dict]) -> list[str]:
    lines = [
        "## (b2) MedNeXt-S training step: MONAI's depth-wise convs vs visprior's direct/FFT choice",
        "",
        "MedNeXt-S at 16 filters (the demo's width), batch 2 of 48^3 crops, AdamW, cross entropy "
        "over 10 classes; median of the timed repeats after one warm-up, each case in a fresh "
        "process. The strided depth-wise convs of the down- and up-sampling blocks are MONAI's "
        "in both.",
        "",
        "| k | MONAI step s | visprior auto step s | MONAI / visprior | "
        "peak MiB (MONAI, visprior) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        monai, ours = row["MONAI"], row["visprior auto"]
        if monai.get("error") or ours.get("error"):
            lines.append(f"| {row['k']} | failed | failed | - | - |")
            continue
        lines.append(
            f"| {row['k']} | {monai['seconds']:.2f} | {ours['seconds']:.2f} | "
            f"{monai['seconds'] / ours['seconds']:.1f}x | "
            f"{monai['peak_mib']:.0f}, {ours['peak_mib']:.0f} |"
        )
    return lines


def run(quick: bool, repeats: int, log) -> list[dict]:
    """(b2) MedNeXt-S training steps with MONAI's and with visprior's depth-wise convs."""
    rows = []
    size = 32 if quick else 48
    for k in KERNELS_QUICK if quick else KERNELS_FULL:
        row = {"k": k, "size": size}
        for variant in VARIANTS:
            m = measure_in_subprocess(build_step, variant, k, size, repeats=repeats)
            row[variant] = measurement_row(m)
            log(f"(b2) MedNeXt-S k{k} {variant}: {m.seconds:.2f} s")
        rows.append(row)
    return rows
