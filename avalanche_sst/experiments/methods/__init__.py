"""Every sweep method. Each module of this package registers its methods at
import (``registry.register``); importing the package imports them all, so a
new method is one new module here and no other edit."""

import importlib
import pkgutil

from avalanche_sst.experiments.registry import (  # noqa: F401  (the public API of the methods)
    METHODS,
    SETTINGS,
    Method,
    StrategyContext,
    check_setting,
    common_kwargs,
    get_method,
    parse_variant,
    register,
)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
