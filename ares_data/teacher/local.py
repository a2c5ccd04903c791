"""Teachers that answer on this machine instead of over HTTP (`--provider prm`).

A local provider's answerer comes from a plugin: the `ares.teachers` entry point of its name, a
class taking `(store, config)` whose instances are the call runner's `Answerer` (calls.py): they
turn a request body into a `Reply`. The PRM's lives in `ares_train` (torch), found by name here
so `ares_data` never imports it; without the training extra the lookup fails in one line naming
the extra.
"""

from __future__ import annotations

from dataclasses import replace
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from ..errors import TeacherError
from ..extras import missing_extra, require
from ..prm_data import find_prm
from ..store import Store
from .config import Provider, TeacherConfig

if TYPE_CHECKING:
    from .calls import Answerer

PLUGIN_GROUP = "ares.teachers"


def is_local(config: TeacherConfig) -> bool:
    return config.provider is Provider.prm


def local_teacher(store: Store, config: TeacherConfig) -> TeacherConfig:
    """`config` with the PRM named by its checkpoint name, however it was given (name or directory),
    so its calls are recorded, resumed and compared under one name."""
    require("train")
    with store.session() as session:
        return replace(config, model=find_prm(session, config.model).name)


def local_answerer(store: Store, config: TeacherConfig) -> "Answerer":
    """The answerer of a local provider, loaded from its plugin (the model is read once, here)."""
    require("train")
    found = [e for e in entry_points(group=PLUGIN_GROUP) if e.name == config.provider.value]
    if not found:
        raise TeacherError(f"--provider {config.provider.value}: no `{PLUGIN_GROUP}` plugin of that name is "
                           "installed (re-run `make install` or `pip install -e .` to register it)")
    try:
        factory = found[0].load()
    except ModuleNotFoundError as exc:
        hint = missing_extra(exc)
        if hint is None:
            raise
        raise hint from exc
    return factory(store, config)
