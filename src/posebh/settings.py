"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from posebh.hooks import RunEnvironmentHooks

HOOKS = (RunEnvironmentHooks(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
# "soft" merges conf/paper or conf/local over conf/base key by key instead of replacing whole
# top-level entries, so an environment overrides only what it names.
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
}
