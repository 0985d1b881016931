"""Matching a manual layer's named arrays with its torch counterpart's: the one name matcher
behind ``check_layer``, ``check_model`` and ``crosscheck train --model``."""

from __future__ import annotations

from collections.abc import Mapping


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def match_names(ours: Mapping[str, tuple], theirs: Mapping[str, tuple], mapping: Mapping[str, str],
                kind: str = "parameter", transformed=()) -> dict[str, str]:
    """{our name: their name} for every array on both sides, else one ValueError line.

    Args:
        ours: the layer's names -> shapes (after any layout transform: the shape torch should see).
        theirs: the module's names -> shapes.
        mapping: our name -> their name where the two differ (``torch_names``); others keep theirs.
        kind: "parameter" or "buffer", for the messages.
        transformed: our names whose shape is that of a layout transform's result (said so).
    Raises:
        ValueError naming a mapped name the layer lacks, a name missing on either side, or shapes
        that differ.
    """
    unknown = [n for n in mapping if n not in ours]
    if unknown:
        raise ValueError(f"torch_names maps {unknown}, which the layer's {kind}s ({list(ours)}) do not hold")
    pairs = {n: mapping.get(n, n) for n in ours}
    missing = [n if t == n else f"{n} (torch name {t})" for n, t in pairs.items() if t not in theirs]
    if missing:
        raise ValueError(f"the module has no {kind} {', '.join(missing)}; its {kind}s are {list(theirs)} "
                         "(torch_names maps the layer's names to the module's)")
    extra = [t for t in theirs if t not in pairs.values()]
    if extra:
        running = kind == "buffer" and all(t.startswith("running_") for t in extra)
        fix = ("build the module with track_running_stats=False (batch statistics in both modes, no running "
               "buffers), or give the layer the same buffers") if running else \
            f"give the layer the same {kind}s, or map names with torch_names"
        raise ValueError(f"the module's {_plural(len(extra), kind)} {', '.join(extra)} "
                         f"{'has' if len(extra) == 1 else 'have'} no counterpart in the layer's {kind}s "
                         f"({list(ours)}); {fix}")
    for n, t in pairs.items():
        if tuple(ours[n]) != tuple(theirs[t]):
            after = " after its transform (torch_params)" if n in transformed else ""
            hint = ""
            if not after and len(ours[n]) >= 2 and tuple(ours[n])[::-1] == tuple(theirs[t]):
                turn = "W.T" if len(ours[n]) == 2 else f"W.permute{tuple(range(len(ours[n])))[::-1]}"
                hint = (f"; it is the transpose of torch's: give the layout as a transform, "
                        f"torch_params={{{n!r}: ({t!r}, lambda W: {turn})}}")
            raise ValueError(f"{kind} {n} has shape {tuple(ours[n])} in the layer{after} but {tuple(theirs[t])} "
                             f"in the module ({t}){hint}")
    return pairs
