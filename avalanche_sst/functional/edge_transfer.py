"""Selective layer-wise knowledge transfer (Zhao, Chen & Zhao, "Enabling Deep
Learning on Edge Devices through Filter Pruning and Knowledge Transfer",
sec. 4.1 eq. 3-4 and the loss below them; sec. 4.2 for unseen classes).

Per batch, every student block is paired with the teacher block of the same
group whose l2-normalised feature map (eq. 4; the student's zero-padded at the
channel tail to the teacher's width) has the highest cosine similarity (eq. 3).
The loss is ``l1*J1 + l2*sum_b J_b + l3*J3`` with

* J1: l2 distance between teacher and student logits over the teacher's classes,
* J_b: l2 distance between the paired normalised maps,
* J3: binary cross entropy of the student's softmax outputs against one-hot
  labels (the paper prints it without its minus sign; ../shared/METHOD.md).

Every distance is taken per sample and averaged over the batch; eq. 4
normalises each sample's map, so a batch's cosine (eq. 3) is the mean of the
per-sample cosines. Sec. 4.2 drops J3 (no labels).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
from torch.nn import functional as F

__all__ = [
    "BlockPair",
    "batch_cosine",
    "edge_kt_loss",
    "feature_distance",
    "logit_distance",
    "normalised_map",
    "one_hot_bce",
    "pair_blocks",
]


def normalised_map(maps: torch.Tensor, width: Optional[int] = None) -> torch.Tensor:
    """Eq. 4 per sample: zero-pad channels at the tail to ``width``, flatten, l2-normalise -> [B, D]."""
    if maps.dim() != 4:
        raise ValueError(f"normalised_map: expected a [B, C, H, W] feature map, got shape {tuple(maps.shape)}")
    channels = maps.shape[1]
    if width is not None:
        if channels > width:
            raise ValueError(
                f"a student block has {channels} channels but its teacher's group has {width}: "
                f"the student may not be wider than its teacher; build it with "
                f"avalanche_sst.models.student.build_student(teacher, prune_plan(...).widths)"
            )
        maps = F.pad(maps, (0, 0, 0, 0, 0, width - channels))
    return F.normalize(maps.flatten(1), dim=1)


def batch_cosine(q_teacher: torch.Tensor, q_student: torch.Tensor) -> torch.Tensor:
    """Eq. 3 on the batch's normalised maps ([B, D] each), flattened together."""
    if q_teacher.shape != q_student.shape:
        raise ValueError(
            f"cosine similarity needs maps of one shape, got teacher {tuple(q_teacher.shape)} and "
            f"student {tuple(q_student.shape)} (blocks of one group share their spatial size)"
        )
    return F.cosine_similarity(q_teacher.flatten(), q_student.flatten(), dim=0)


class BlockPair(NamedTuple):
    group: int
    student_block: int
    teacher_block: int
    cosine: float


def pair_blocks(
    teacher_maps: Sequence[Sequence[torch.Tensor]], student_maps: Sequence[Sequence[torch.Tensor]]
) -> tuple[list[BlockPair], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Pair each student block with the teacher block of its group of highest cosine.

    Both arguments hold, per group, the blocks' raw [B, C, H, W] outputs.
    Returns the pairs and, for each, the (teacher, student) normalised maps
    whose distance is J_b (the student's keeps its graph).
    """
    if len(teacher_maps) != len(student_maps):
        raise ValueError(
            f"teacher and student need the same number of groups, got {len(teacher_maps)} and {len(student_maps)}"
        )
    pairs, matched = [], []
    for g, (t_group, s_group) in enumerate(zip(teacher_maps, student_maps)):
        if not t_group or not s_group:
            raise ValueError(f"group {g} has no blocks in the teacher or the student")
        width = max(t.shape[1] for t in t_group)
        q_teacher = [normalised_map(t.detach(), width) for t in t_group]
        for j, s in enumerate(s_group):
            q_student = normalised_map(s, width)
            with torch.no_grad():
                cosines = torch.stack([batch_cosine(q, q_student) for q in q_teacher])
            k = int(torch.argmax(cosines))
            pairs.append(BlockPair(g, j, k, float(cosines[k])))
            matched.append((q_teacher[k], q_student))
    return pairs, matched


def logit_distance(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, teacher_classes: Optional[Sequence[int]] = None
) -> torch.Tensor:
    """J1: per-sample l2 distance of the logits over the teacher's classes, batch mean.

    ``teacher_classes``: the label ids the teacher knows (default: its first
    ``teacher_logits.shape[1]`` outputs); both models' logits are read there.
    """
    if teacher_classes is None:
        teacher_classes = range(teacher_logits.shape[1])
    idx = torch.as_tensor(list(teacher_classes), device=student_logits.device, dtype=torch.long)
    if idx.numel() and int(idx.max()) >= student_logits.shape[1]:
        raise ValueError(
            f"J1 reads the teacher's classes {idx.tolist()} but the student has only "
            f"{student_logits.shape[1]} outputs"
        )
    t = teacher_logits[:, idx] if teacher_logits.shape[1] > idx.numel() else teacher_logits
    return torch.linalg.vector_norm(t.detach() - student_logits[:, idx], dim=1).mean()


def feature_distance(q_teacher: torch.Tensor, q_student: torch.Tensor) -> torch.Tensor:
    """J_b: per-sample l2 distance of two normalised maps ([B, D]), batch mean."""
    return torch.linalg.vector_norm(q_teacher.detach() - q_student, dim=1).mean()


def one_hot_bce(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """J3: -sum_i [y_i log p_i + (1 - y_i) log(1 - p_i)] with p the softmax, batch mean."""
    probs = F.softmax(student_logits, dim=1)
    target = F.one_hot(labels.long(), num_classes=student_logits.shape[1]).to(probs.dtype)
    return F.binary_cross_entropy(probs, target, reduction="none").sum(dim=1).mean()


def edge_kt_loss(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_maps: Sequence[Sequence[torch.Tensor]],
    student_maps: Sequence[Sequence[torch.Tensor]],
    labels: Optional[torch.Tensor] = None,
    l1: float = 1.0,
    l2: float = 1.0,
    l3: float = 1.0,
    teacher_classes: Optional[Sequence[int]] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[BlockPair]]:
    """The sec. 4.1 loss (sec. 4.2 when ``labels`` is None: J3 is dropped).

    Returns the total, the terms (``J1``, ``J_b/group{g}.{j}``, ``J_b``, ``J3``
    when labelled) and the chosen block pairs.
    """
    pairs, matched = pair_blocks(teacher_maps, student_maps)
    terms: dict[str, torch.Tensor] = {"J1": logit_distance(teacher_logits, student_logits, teacher_classes)}
    block_terms = []
    for pair, (q_t, q_s) in zip(pairs, matched):
        jb = feature_distance(q_t, q_s)
        terms[f"J_b/group{pair.group + 1}.{pair.student_block}"] = jb
        block_terms.append(jb)
    terms["J_b"] = torch.stack(block_terms).sum()
    total = l1 * terms["J1"] + l2 * terms["J_b"]
    if labels is not None:
        terms["J3"] = one_hot_bce(student_logits, labels)
        total = total + l3 * terms["J3"]
    return total, terms, pairs
