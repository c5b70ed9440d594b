"""Typed registries: `@REG.register(name)` next to the class is the one place a component is named."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from harness.core.errors import UnknownName

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Name -> class map for one kind of component (methods, tasks).

    Modules under `packages` are imported on first lookup, so registering a new component takes no
    edit anywhere else, and `import methods` stays free of heavy imports (torch) until a name is asked for.
    """

    def __init__(self, kind: str, base: type, packages: tuple[str, ...]):
        self.kind = kind
        self.base = base
        self.packages = packages
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator that registers `cls` under `name`; rejects duplicates and wrong base classes."""

        def decorator(cls: T) -> T:
            if not issubclass(cls, self.base):
                raise TypeError(f"{cls.__name__} must subclass {self.base.__name__} to be a {self.kind}")
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(
                    f"{self.kind} '{name}' is registered twice ({self._entries[name].__name__}, {cls.__name__})"
                )
            cls.name = name
            self._entries[name] = cls
            return cls

        return decorator

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for package_name in self.packages:
            package = importlib.import_module(package_name)
            for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
                importlib.import_module(info.name)

    def get(self, name: str) -> T:
        """The class registered under `name`, or `UnknownName` listing the valid names."""
        self._discover()
        if name not in self._entries:
            raise UnknownName(self.kind, name, self.names())
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._discover()
        return sorted(self._entries)
