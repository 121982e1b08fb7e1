"""The residual stages of a network (groups of blocks sharing one resolution).

M2KD (Zhou et al., BMVC 2020, sec. 3.2 and 4.1) puts its auxiliary classifier
on the output of the second residual stage: ``layer2`` of the CIFAR ResNets
and Wide ResNets, and of torchvision's ResNets. Any other model declares its
stages with a ``stages`` attribute: a list of submodule names or modules in
forward order.
"""

from __future__ import annotations

from torch import nn

__all__ = ["residual_stages", "stage", "stage_out_channels"]


def residual_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(qualified name, module), ...]`` of the model's stages in forward order."""
    declared = getattr(model, "stages", None)
    names = {m: n for n, m in model.named_modules()}
    if declared is not None:
        out = []
        for s in declared:
            if isinstance(s, str):
                out.append((s, model.get_submodule(s)))
            elif isinstance(s, nn.Module) and s in names:
                out.append((names[s], s))
            else:
                raise ValueError(f"{model.__class__.__name__}.stages must list submodule names or "
                                 f"submodules of the model, got {s!r}")
        return out
    out = []
    for i in range(1, 10):
        layer = getattr(model, f"layer{i}", None)
        if not isinstance(layer, nn.Module):
            break
        out.append((f"layer{i}", layer))
    return out


def stage(model: nn.Module, index: int, who: str = "this method") -> tuple[str, nn.Module]:
    """The ``index``-th stage (1-based, as the papers count) or a ValueError naming the fix."""
    stages = residual_stages(model)
    if not isinstance(index, int) or index < 1:
        raise ValueError(f"{who}: the stage index counts from 1, got {index!r}")
    if len(stages) < index:
        raise ValueError(
            f"{who} needs residual stage {index} of {model.__class__.__name__}, which has "
            f"{len(stages)} stage(s): give the model `layer1`, `layer2`, ... attributes or a "
            f"`stages` list of its stage modules (or names) in forward order, or choose a smaller stage")
    return stages[index - 1]


def stage_out_channels(module: nn.Module) -> int:
    """Channels a stage outputs: those of its last Conv2d."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"cannot tell the output channels of {module.__class__.__name__}: it has no Conv2d")
    return convs[-1].out_channels
