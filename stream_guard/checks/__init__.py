"""Data-validity checks of model features against their baseline profile.

Wire them into a worker with one configuration for both halves::

    config = load_config(path).checks              # or ChecksConfig.from_dict(table)
    checks = FeatureChecks(profiles, config)        # a checker: findings + contribute
    window_checks = WindowChecks(profiles, config)  # an evaluator of closed windows
"""

from stream_guard.checks.row_checks import FeatureChecks
from stream_guard.checks.window_checks import WindowChecks
from stream_guard.settings.checks import CHECKS, ChecksConfig, CheckSettings

__all__ = ["CHECKS", "CheckSettings", "ChecksConfig", "FeatureChecks", "WindowChecks"]
