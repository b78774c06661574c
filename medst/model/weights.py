"""Loading pretrained ViT weights (timm / DeiT layout, or the ViT inside an MGCA Lightning checkpoint) into the
MoVE encoder, strictly apart from an explicit allow-list (SPEC §2: pretrained weights only from local files)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medst.errors import MedstError, UserInputError
from medst.model.vit import MoveViT
from medst.schemas.common import LateralInit

#: Keys of our encoder a timm/DeiT/MGCA state dict does not have: the lateral expert (random or copied).
LATERAL_EXPERT_KEYS: tuple[str, ...] = ("blocks.*.norm2_l.*", "blocks.*.mlp_l.*")
#: Keys of a timm/DeiT classifier that the encoder does not use.
CLASSIFIER_KEYS: tuple[str, ...] = ("head.*", "head_dist.*", "dist_token", "pre_logits.*", "fc_norm.*")
MGCA_VIT_PREFIX = "img_encoder_q.model."


@dataclass
class LoadReport:
    """What a weight load did: keys loaded, keys of the encoder left as they were (allowed), keys ignored."""

    loaded: list[str] = field(default_factory=list)
    missing_allowed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    lateral_init: str = "loaded"
    #: Why tensors were ignored -> how many (filled by loaders that know the source layout).
    ignored_by_reason: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: counts of loaded / ignored (by reason) / allowed-missing tensors and the lateral expert's
        origin."""
        parts = [f"loaded {len(self.loaded)} tensors"]
        if self.ignored:
            reasons = self.ignored_by_reason or {"not used": len(self.ignored)}
            parts.append(
                f"ignored {len(self.ignored)} ("
                + "; ".join(f"{n} {why}" for why, n in reasons.items())
                + ")"
            )
        if self.missing_allowed:
            parts.append(f"{len(self.missing_allowed)} absent and allowed")
        parts.append(f"lateral expert {self.lateral_init}")
        return ", ".join(parts)


def read_state_dict(path: Path | str) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``; no pickle code runs). Unwraps
    Lightning (``state_dict``) and DeiT (``model``) containers."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import pickle

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message advises weights_only=False, i.e. running the file's code: never pass that on.
        raise UserInputError(
            f"{path} holds pickled Python objects (such as a whole model saved with torch.save(model)), not a "
            "weights file medst loads safely, and was not unpickled; where it was made, save its weights with "
            "torch.save(model.state_dict(), 'weights.pth') or safetensors.torch.save_file(model.state_dict(), "
            "'weights.safetensors')"
        ) from err
    except Exception as err:
        raise UserInputError(
            f"{path} is not a torch weights file ({type(err).__name__}); give a .safetensors file or a state dict "
            "saved with torch.save"
        ) from err
    return unwrap_state_dict(obj)


def unwrap_state_dict(obj: object) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return unwrap_state_dict(inner)
        if all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
    raise UserInputError("the weights file does not hold a state dict of tensors")


def matches_any(key: str, patterns: Iterable[str]) -> bool:
    """Whether ``key`` matches any of the ``fnmatch`` patterns (case-sensitive)."""
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def resize_pos_embed(pos: Tensor, grid: int) -> Tensor:
    """``[1, 1 + g*g, C]`` position embeddings resized to ``grid x grid`` patches (bicubic), CLS slot kept."""
    cls, patches = pos[:, :1], pos[:, 1:]
    old = round(patches.shape[1] ** 0.5)
    if old * old != patches.shape[1]:
        raise MedstError(f"pos_embed with {patches.shape[1]} patch slots is not a square grid")
    img = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    img = F.interpolate(img, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, img.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos.dtype)], dim=1)


def copy_fitting(
    own: Mapping[str, Tensor],
    state: Mapping[str, Tensor],
    allow_missing: Iterable[str],
    unknown: list[str],
    pos_key: str,
    grid: int,
    what: str,
) -> list[str]:
    """Copy ``state`` into the tensors ``own`` (a module's state dict) after checking that they fit.

    ``unknown`` lists source keys with no place in ``own`` (found by the caller); keys of ``own`` absent from
    ``state`` must match ``allow_missing``. Position embeddings (``pos_key``) of another grid are resized to
    ``grid``. Nothing is copied unless everything fits. Returns the keys of ``own`` that were absent.

    Raises:
        UserInputError: ``"{what} does not fit ..."`` (one line) naming missing or unknown keys, or the shapes
            that differ.
    """
    missing = [k for k in own if k not in state]
    not_allowed = [k for k in missing if not matches_any(k, allow_missing)]
    if unknown or not_allowed:
        parts = []
        if not_allowed:
            parts.append(f"missing {len(not_allowed)} keys (e.g. {', '.join(not_allowed[:4])})")
        if unknown:
            parts.append(f"{len(unknown)} unknown keys (e.g. {', '.join(unknown[:4])})")
        raise UserInputError(f"{what} does not fit the model: " + "; ".join(parts))
    fitted, bad = {}, []
    for key, value in state.items():
        if key not in own:
            continue
        if key == pos_key and value.shape != own[key].shape and value.shape[-1] == own[key].shape[-1]:
            value = resize_pos_embed(value, grid)
        if value.shape != own[key].shape:
            bad.append(f"{key}: {what} {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        fitted[key] = value
    if bad:
        raise UserInputError(f"{what} holds weights of another shape: {'; '.join(bad[:4])}")
    with torch.no_grad():
        for key, value in fitted.items():
            own[key].copy_(value.to(own[key].dtype))
    return missing


def _find_vit(model_or_vit: nn.Module) -> MoveViT:
    if isinstance(model_or_vit, MoveViT):
        return model_or_vit
    vit = getattr(model_or_vit, "vit", None)
    if isinstance(vit, MoveViT):
        return vit
    raise TypeError(f"expected a MoveViT or a MedST, got {type(model_or_vit).__name__}")


@torch.no_grad()
def load_vit_state_dict(
    model_or_vit: nn.Module,
    state_dict_or_path: Mapping[str, Tensor] | Path | str,
    prefix: str = "",
    allow_missing: Iterable[str] = LATERAL_EXPERT_KEYS,
    ignore_unexpected: Iterable[str] = CLASSIFIER_KEYS,
    lateral_init: LateralInit | None = None,
) -> LoadReport:
    """Load timm/DeiT-layout ViT weights into the MoVE encoder of ``model_or_vit``.

    Args:
        state_dict_or_path: a state dict, or a ``.safetensors`` / torch file (Lightning checkpoints unwrapped).
        prefix: only keys under this prefix are the ViT (``"img_encoder_q.model."`` for MGCA); stripped. Left
            empty, a state dict without ``cls_token`` but with MGCA keys gets the MGCA prefix.
        allow_missing: ``fnmatch`` patterns of encoder keys that may be absent (default: the lateral expert).
        ignore_unexpected: patterns of extra ViT keys to skip (default: classifier heads).
        lateral_init: when the lateral expert was not in the file, leave it random or copy the frontal expert;
            ``None`` takes the model config's ``lateral_init``.
    Raises:
        MedstError: a required key is missing, an unknown key is present, or a shape differs (position
            embeddings of another grid are resized instead).
    """
    vit = _find_vit(model_or_vit)
    source = (
        read_state_dict(state_dict_or_path)
        if isinstance(state_dict_or_path, (str, Path))
        else state_dict_or_path
    )
    if not prefix and "cls_token" not in source and any(k.startswith(MGCA_VIT_PREFIX) for k in source):
        prefix = MGCA_VIT_PREFIX  # an MGCA / Med-ST Lightning checkpoint given without its prefix
    if prefix:
        state = {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
        if not state:
            raise MedstError(
                f"no weights under prefix {prefix!r} (first keys: {', '.join(list(source)[:3])})"
            )
    else:
        state = dict(source)
    allow_missing, ignore_unexpected = tuple(allow_missing), tuple(ignore_unexpected)
    own = vit.state_dict()
    report = LoadReport()
    unexpected = [k for k in state if k not in own and not matches_any(k, ignore_unexpected)]
    report.ignored = sorted(k for k in state if k not in own and matches_any(k, ignore_unexpected))
    missing = copy_fitting(own, state, allow_missing, unexpected, "pos_embed", vit.config.grid, "ViT weights")
    report.loaded = [k for k in state if k in own]
    report.missing_allowed = sorted(missing)
    lateral_missing = any(matches_any(k, LATERAL_EXPERT_KEYS) for k in missing)
    choice = lateral_init or vit.config.lateral_init
    if lateral_missing:
        if choice == "copy":
            vit.copy_frontal_to_lateral()
        report.lateral_init = choice
    return report
