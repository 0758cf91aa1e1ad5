"""Demo node: regenerate the embedded demo data in every raw release format."""

from __future__ import annotations


def generate(params: dict) -> dict:
    from posebh.data.demo import generate_demo

    return generate_demo(params["out_dir"], seed=params["seed"], scale=params["scale"])
