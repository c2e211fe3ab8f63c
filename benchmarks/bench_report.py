"""The Markdown summary of a bench.py result record (also readable while the benchmark is still running)."""

from __future__ import annotations


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f}%" if x is not None else "—"


def _spread(s: dict | None, fmt: str = "{:.1f}") -> str:
    if not s:
        return "—"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def train_table(r: dict) -> list[str]:
    lines = [
        "| Loop | batch | images/s: median (min–max) | vs reference | of bf16 matmul | of own-precision matmul "
        "| peak memory (GiB) | warm-up (s) | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in r["train"].values():
        status = row.get("error") or row.get("status", "")
        mem = f"{row['peak_memory_gib']:.2f}" if "peak_memory_gib" in row else "—"
        loop = row["loop"] if row["loop"] == "reference" else f"dard-{row['loop']}"
        lines.append(
            f"| {loop} | {row['batch_size']} | {_spread(row.get('images_per_s'))} | "
            f"{_spread(row.get('vs_reference'), '{:.2f}x')} | {_pct(row.get('fraction_of_bf16_matmul'))} | "
            f"{_pct(row.get('fraction_of_own_precision_matmul'))} | {mem} | {row.get('warmup_s', '—')} | {status} |"
        )
    return lines


def eval_lines(r: dict) -> list[str]:
    lines = []
    pgd = r.get("pgd20_eval")
    if pgd and pgd.get("images_per_s"):
        ips = pgd["images_per_s"]
        lines.append(
            f"PGD-20 evaluation ({pgd['n']} images, batch {pgd['batch_size']}): dard {_spread(ips['dard'])} img/s, "
            f"reference {_spread(ips['reference'])} img/s ({_spread(pgd.get('vs_reference'), '{:.2f}x')})."
        )
    elif pgd and pgd.get("error"):
        lines.append(f"PGD-20 evaluation failed: {pgd['error']}")
    aa = r.get("autoattack")
    if aa and aa.get("seconds"):
        lines.append(
            f"AutoAttack standard: {aa['n']} images in {aa['seconds']:.1f}s ({aa['images_per_s']:.2f} img/s; clean "
            f"{aa['clean_accuracy']:.1%}, robust {aa['robust']:.1%}: its cost grows with the points that stay robust)."
        )
    elif aa and aa.get("error"):
        lines.append(f"AutoAttack failed: {aa['error']}")
    return lines


def summary(r: dict) -> str:
    s, pf = r["setup"], r["peak_flops"]
    sizes = ", ".join(str(b) for b in s["batch_sizes"])
    env = r["environment"]
    lines = [
        f"# Benchmark: {r['device']}" + ("" if r.get("complete") else " (incomplete)"),
        "",
        f"`{r['command']}` ({r['date']}, dard {env.get('git_commit')}, torch {env.get('torch')})",
        "",
        f"DARD training step: student {s['student']}, teacher {s['teacher']}, DPGD-{s['attack_steps']}, batch "
        f"{sizes}, {s['data']} images; {s['train_macs_per_image'] / 1e9:.2f} GMAC of useful work per image. "
        f"{s['rounds']} alternating rounds of {s['steps']} steps after warm-up.",
        "",
        *train_table(r),
        "",
    ]
    rates = [f"{k.split('_')[1]} {v / 1e9:.0f} GFLOP/s" for k, v in pf.items() if k.startswith("measured") and v]
    lines.append(
        "Measured matmul rate: "
        + (", ".join(rates) or "—")
        + (f"; nominal bf16 {pf['nominal_bf16'] / 1e12:.0f} TFLOP/s" if pf.get("nominal_bf16") else "")
        + ". Own precision: bf16 loops on CUDA against the bf16 rate, the rest against fp32."
    )
    lines += ["", *eval_lines(r)]
    if r.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(r["skipped"]) + "."]
    return "\n".join(lines) + "\n"
