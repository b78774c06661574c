"""Text encoder (SPEC §2): a BERT-family model from a local folder (or a random one), truncated to its first k
layers, with word pieces summed into words by a segment sum over ``word_ids``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medst.errors import UserInputError
from medst.model.config import TextConfig
from medst.schemas.common import Compat

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _quiet_transformers() -> None:
    """Keep Hugging Face's per-load progress bars and load reports (e.g. an unused pooler) off the user's terminal;
    medst reports what matters itself and errors still surface as exceptions."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def build_text_backbone(config: TextConfig) -> nn.Module:
    """The Hugging Face encoder named by ``config``: ``AutoModel`` from the local folder ``config.path`` (offline),
    or a randomly initialised ``BertModel`` of the configured size. Not yet truncated."""
    from transformers import AutoModel, BertConfig, BertModel

    if config.path is not None:
        folder = Path(config.path)
        if not (folder / "config.json").is_file():
            raise UserInputError(
                f"text model folder {folder} has no config.json (give a local Hugging Face folder)"
            )
        _quiet_transformers()
        return AutoModel.from_pretrained(str(folder), local_files_only=True)
    bert_config = BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        intermediate_size=config.intermediate,
        max_position_embeddings=config.max_position_embeddings,
    )
    return BertModel(bert_config, add_pooling_layer=False)


def backbone_from_hf_config(hf_config: dict) -> nn.Module:
    """A randomly initialised backbone from a saved Hugging Face config dict (weights come from our export)."""
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.for_model(**hf_config)
    return AutoModel.from_config(cfg)


def _layer_list(model: nn.Module) -> nn.ModuleList:
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise UserInputError(f"{type(model).__name__} is not a BERT-family encoder (no encoder.layer list)")
    return layers


def truncate_layers(model: nn.Module, num_layers: int | None) -> None:
    """Keep the first ``num_layers`` transformer layers (the paper keeps 6), in place."""
    if num_layers is None:
        return
    layers = _layer_list(model)
    if num_layers > len(layers):
        raise UserInputError(f"text num_layers {num_layers} exceeds the model's {len(layers)} layers")
    encoder: Any = model.encoder
    encoder.layer = nn.ModuleList(list(layers)[:num_layers])
    config: Any = model.config
    config.num_hidden_layers = num_layers


def aggregate_words(hidden: Tensor, word_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Sum word pieces into words, CLS excluded.

    Args:
        hidden: ``[N, L, H]`` token features.
        word_ids: ``[N, L]``: CLS = 0, words 1..W, SEP = W + 1, padding = -1.
    Returns:
        ``words [N, L - 1, H]`` (slot ``s`` holds word ``s + 1``; the SEP word included; zero padding) and
        ``word_mask [N, L - 1]`` bool.
    """
    n, length, h = hidden.shape
    slots = length - 1
    # Tokens that are not words (CLS, padding) go to a spare slot per row that is cut off afterwards.
    slot = torch.where(word_ids >= 1, word_ids - 1, torch.full_like(word_ids, slots)).clamp(max=slots)
    flat = (slot + torch.arange(n, device=hidden.device)[:, None] * (slots + 1)).reshape(-1)
    out = hidden.new_zeros(n * (slots + 1), h).index_add(0, flat, hidden.reshape(-1, h))
    words = out.view(n, slots + 1, h)[:, :slots]
    num_words = word_ids.max(dim=1).values.clamp(min=0)
    word_mask = torch.arange(slots, device=hidden.device)[None, :] < num_words[:, None]
    return words, word_mask


class TextEncoder(nn.Module):
    """BERT wrapper: ``forward`` -> ``(cls [N, H], words [N, L - 1, H], word_mask [N, L - 1])``.

    ``compat="reference"`` feeds all-zero position ids (the authors pass token_type_ids where BERT expects
    position ids, so the encoder has no word order); ``"clean"`` uses proper positions.
    """

    def __init__(
        self,
        config: TextConfig,
        compat: Compat = "clean",
        model: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.compat = compat
        bert: Any = build_text_backbone(config) if model is None else model
        truncate_layers(bert, config.num_layers)
        # The pooler is never used: drop it so that every parameter gets a gradient (DDP without unused search).
        if getattr(bert, "pooler", None) is not None:
            bert.pooler = None
        self.hidden = int(bert.config.hidden_size)
        self.bert = bert

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, word_ids: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        position_ids = torch.zeros_like(input_ids) if self.compat == "reference" else None
        mask = attention_mask
        implementation = self._attn_implementation()
        if _PREPARED_MASKS_PASS_THROUGH and implementation in ("sdpa", "eager"):
            mask = key_padding_mask(attention_mask, implementation, self._mask_dtype())
        out = self.bert(input_ids=input_ids, attention_mask=mask, position_ids=position_ids)
        hidden = out.last_hidden_state
        words, word_mask = aggregate_words(hidden, word_ids)
        return hidden[:, 0], words, word_mask

    def _attn_implementation(self) -> str:
        return str(getattr(self.bert.config, "_attn_implementation", None) or "eager")

    def _mask_dtype(self) -> torch.dtype:
        if torch.is_autocast_enabled():
            # What the attention scores are computed in under autocast (HF builds its masks in this dtype too).
            return torch.get_autocast_dtype(self.bert.device.type)  # type: ignore[attr-defined]
        return next(self.bert.parameters()).dtype


def _prepared_masks_pass_through() -> bool:
    """Whether the installed transformers hands a 4-D attention mask to the attention kernels unchanged
    (``masking_utils.create_bidirectional_mask``, transformers 5); older releases rebuild it themselves."""
    try:
        from transformers import masking_utils
    except ImportError:
        return False
    return hasattr(masking_utils, "create_bidirectional_mask")


_PREPARED_MASKS_PASS_THROUGH = _prepared_masks_pass_through()


def key_padding_mask(attention_mask: Tensor, implementation: str, dtype: torch.dtype) -> Tensor:
    """The ``[N, L]`` 0/1 padding mask as the ``[N, 1, 1, L]`` key mask that a BERT attention kernel takes:
    bool (True = attend) for SDPA, additive (0 or the dtype's minimum) for the eager kernel.

    Built here because transformers, given the 2-D mask, first asks ``mask.all()`` (to drop the mask when nothing
    is padded), which reads the mask back from the GPU and stalls the training step; reports are nearly always
    padded, so the answer is nearly always no."""
    keep = attention_mask[:, None, None, :].to(torch.bool)
    if implementation == "sdpa":
        return keep
    zeros = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
    return zeros.masked_fill(~keep, torch.finfo(dtype).min)


def demo_wordpiece_vocab(texts: Iterable[str], vocab_size: int) -> dict[str, int]:
    """A WordPiece vocabulary of at most ``vocab_size`` entries (more only if the characters alone need more),
    the same for the same texts in any process: the special tokens, every character seen (alone and as a
    ``##`` continuation, so any word can be spelled), then whole words by falling count, ties alphabetically.

    Built by counting rather than with the ``tokenizers`` trainer, whose merge ties (and so token ids) follow
    hash order and changed between calls with identical input.
    """
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for word in counts for c in word})
    tokens = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    tokens += words[: max(0, vocab_size - len(tokens))]
    return {token: i for i, token in enumerate(tokens)}


def build_demo_text_model(
    texts: Iterable[str],
    out_dir: Path,
    vocab_size: int = 2000,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    max_length: int = 112,
    seed: int = 0,
) -> Path:
    """Build a WordPiece tokenizer from ``texts`` (`demo_wordpiece_vocab`) and save it with a randomly initialised
    ``BertModel`` as a local Hugging Face folder (``AutoTokenizer`` / ``AutoModel`` load it offline).
    Byte-identical files for the same texts, sizes and ``seed``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = demo_wordpiece_vocab(texts, vocab_size)
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )
    fast.save_pretrained(str(out_dir))
    bert_config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max(512, max_length),
        pad_token_id=tok.token_to_id("[PAD]"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(bert_config, add_pooling_layer=False)
    _quiet_transformers()  # no "Writing model shards" bar in the middle of a run's output
    model.save_pretrained(str(out_dir))
    return out_dir
