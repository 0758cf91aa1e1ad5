"""The embedded demo data: a deterministic synthetic multi-skeleton world in every raw format.

Real pose datasets cannot be shipped, yet the whole DAG must run on a fresh clone through exactly
the readers real data goes through, and PoseBH's claim (knowledge transfers across skeletons)
needs data where transfer is real. So one world of shared body plans (a biped, a quadruped, a
hand) is rendered and annotated the way each release annotates it, and written in each release's
own layout: see :mod:`posebh.data.demo.generate` for the file tree and
:mod:`posebh.data.demo.bodies` for how the skeletons' definitions differ.

    from posebh.data.demo import generate_demo
    summary = generate_demo("data/01_raw/demo", seed=0, scale=1.0)

``python -m posebh.data.demo --out data/01_raw/demo --seed 0 --scale 1`` does the same.
"""

from posebh.data.demo.generate import DATASETS, DEFAULT_OUT, Truth, generate_demo, plan

__all__ = ["generate_demo", "plan", "Truth", "DATASETS", "DEFAULT_OUT"]
