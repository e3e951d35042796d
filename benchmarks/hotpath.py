"""Profile the request path of flask-gosession contenders (``--profile``).

Uses pyinstrument (a sampling profiler, so the profile's own cost does not
distort fast functions) when installed, else cProfile.
"""
from __future__ import annotations

import io
import typing as t

from .contenders import Contender
from .inprocess import _batch, _prepare


def profile(contender: Contender, scenario: str, requests: int) -> str:
    """Run ``requests`` requests of ``scenario`` under the profiler; return the report."""
    _batch(contender.app, _prepare(contender, scenario, min(requests, 200)))  # warm up
    envs = _prepare(contender, scenario, requests)
    try:
        from pyinstrument import Profiler
    except ImportError:
        return _cprofile(contender, envs)
    profiler = Profiler(interval=0.0001)
    profiler.start()
    _batch(contender.app, envs)
    profiler.stop()
    return str(profiler.output_text(unicode=True, color=False, show_all=False))


def _cprofile(contender: Contender, envs: list[dict[str, t.Any]]) -> str:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    _batch(contender.app, envs)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(40)
    return out.getvalue()
