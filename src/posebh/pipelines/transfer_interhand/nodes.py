"""Transfer nodes: learn a new skeleton with new prototypes, and the comparison rows of Table 7."""

from __future__ import annotations

import pandas as pd


def transfer(
    instances: pd.DataFrame,
    baseline: dict,
    posebh: dict,
    params: dict,
    model: dict,
    objective: dict,
    training: dict,
    sources: dict,
) -> tuple[dict, dict]:
    """Train and evaluate every variant of ``params["variants"]`` on ``params["dataset"]``.

    Returns the results ({"metrics": {variant: {metric: value}}, "training": {variant: summary}})
    and the PoseBH-transferred model.
    """
    from posebh.engine.run import image_roots, resolve_device, run_stage
    from posebh.engine.transfer import transfer_checkpoint
    from posebh.evaluation.inference import evaluate_model, make_heatmap_fn
    from posebh.evaluation.suite import finite
    from posebh.models.posebh import ModelConfig, PoseBH

    dataset = params["dataset"]
    sources_by_init = {"posebh": posebh, "baseline": baseline, None: None}
    obj = _merge(objective, params.get("objective", {}))
    data = dict(training, min_keypoints={dataset: int(params.get("min_keypoints", 1))})
    device = resolve_device(training.get("device", "auto"))
    results: dict = {"metrics": {}, "training": {}}
    transferred = None
    for variant, spec in params["variants"].items():
        init = transfer_checkpoint(
            sources_by_init[spec.get("init")], dataset, source_dataset=spec.get("source_dataset", "coco"),
            keep_embedding=spec.get("init") == "posebh", model=model,
        )
        stage = dict(spec["stage"], name=f"transfer_{dataset}_{variant}")
        state, _, summary = run_stage(
            stage, model=model, objective=obj if variant == "posebh" else objective, data=data,
            instances=instances, sources=sources, init=init, checkpoint_root=training["checkpoint_root"], device=device,
        )
        net = PoseBH(ModelConfig.from_dict(state["config"]))
        net.load_state_dict(state["state_dict"])
        net.to(device)
        metrics, _ = evaluate_model(
            lambda d, net=net: make_heatmap_fn(net, d), {"instances": instances},
            image_roots=image_roots(sources, params.get("eval_split", "test")),
            input_wh=net.config.input_wh, heatmap_wh=net.config.heatmap_wh,
            datasets=[(dataset, params.get("eval_split", "test"), "gt")], device=device,
            progress=bool(training.get("progress", True)),
        )
        results["metrics"][variant] = finite(next(iter(metrics.values()), {}))
        results["training"][variant] = summary
        if variant == "posebh":
            transferred = state
    return results, transferred or {}


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out
