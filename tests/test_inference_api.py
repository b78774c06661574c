"""`medst.load(...).encode_images / encode_texts / similarity / zero_shot` on a tiny random model: the numbers are
the model's own on the training loader's preprocessing, whatever form the input takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_inference_helpers import build_tiny_export, write_images

import medst
from medst.errors import ImageDecodeError
from medst.inference import MedSTEncoder

# What the trainer's loader uses for the tiny preset (medst.train.components.build_loaders): centre crop = the
# model's 96 px input, letterbox = round(96 * 256 / 224) = 110.
CROP, LETTERBOX = 96, 110


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_export(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def enc(export: Path) -> MedSTEncoder:
    return medst.load(export, device="cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    return write_images(folder, 3, ".png") + write_images(folder, 2, ".jpg", start=3)


def _loader_tensor(path: Path) -> torch.Tensor:
    """The training loader's evaluation pipeline on the stored file bytes."""
    from medst.model.transforms import image_pipeline
    from medst.shards.members import decode_image

    return torch.from_numpy(image_pipeline(decode_image(path.read_bytes()), LETTERBOX, CROP, None))


def test_settings_default_to_the_training_preprocessing_when_not_recorded(enc: MedSTEncoder) -> None:
    s = enc.settings
    assert (s.preset, s.letterbox, s.crop, s.max_tokens) == ("mimic-jpg", LETTERBOX, CROP, 48)
    assert s.recorded is False
    assert enc.precision == "fp32" and not enc.model.training


def test_encode_images_on_paths_equals_the_model_on_loader_tensors(
    enc: MedSTEncoder, images: list[Path]
) -> None:
    frontal, lateral = images[:3], [images[3], None, images[4]]
    got = enc.encode_images(frontal, lateral, batch_size=3, features="all")
    f = torch.stack([_loader_tensor(p) for p in frontal])
    lat = torch.stack([_loader_tensor(images[3]), torch.zeros(3, CROP, CROP), _loader_tensor(images[4])])
    with torch.inference_mode():
        want = enc.model.encode_image(f, lat, torch.tensor([True, False, True]))
    assert torch.equal(got.embedding, want.embedding)
    assert torch.equal(got.cls, want.cls)
    assert torch.equal(got.local.features, want.patches) and torch.equal(got.local.mask, want.patch_mask)
    # single view: the frontal path alone
    single = enc.encode_images(frontal, batch_size=3)
    with torch.inference_mode():
        assert torch.equal(single, enc.model.encode_image(f).embedding)
    assert not torch.allclose(single, got.embedding, atol=1e-3)  # the lateral views changed the embedding


def test_arrays_tensors_prepared_inputs_and_paths_agree(enc: MedSTEncoder, images: list[Path]) -> None:
    from medst.archive.pixels import read_image

    by_path = enc.encode_images(images[:3], batch_size=3)
    arrays = [read_image(p) for p in images[:3]]
    assert torch.equal(enc.encode_images(arrays, batch_size=3), by_path)
    assert torch.equal(enc.encode_images([torch.from_numpy(a) for a in arrays], batch_size=3), by_path)
    prepared = torch.stack([_loader_tensor(p) for p in images[:3]])
    assert torch.equal(enc.encode_images(prepared, batch_size=3), by_path)
    # RGB arrays are reduced to luma; a float image in [0, 1] is scaled to 0..255
    rgb = np.repeat(arrays[0][:, :, None], 3, axis=2)
    first = enc.encode_images([images[0]])
    assert torch.equal(enc.encode_images([rgb]), first)
    assert torch.equal(enc.encode_images([torch.from_numpy(rgb).permute(2, 0, 1)]), first)  # channels first
    assert torch.equal(enc.encode_images([arrays[0] / 255.0]), first)


def test_batches_and_repeats_give_the_same_numbers(enc: MedSTEncoder, images: list[Path]) -> None:
    one = enc.encode_images(images, batch_size=1)
    all_ = enc.encode_images(images, batch_size=5)
    assert one.shape == (5, 64)
    assert torch.allclose(one, all_, atol=1e-5)
    assert torch.equal(enc.encode_images(images, batch_size=1), one)  # deterministic on the CPU
    assert torch.allclose(one.norm(dim=1), torch.ones(5), atol=1e-5)


def test_feature_kinds_have_the_documented_shapes(enc: MedSTEncoder, images: list[Path]) -> None:
    cls = enc.encode_images(images[:2], features="cls")
    assert isinstance(cls, torch.Tensor) and cls.shape == (2, 64)  # tiny ViT width
    patches = enc.encode_images(images[:2], lateral=[images[2], None], features="patches")
    grid = (CROP // 16) ** 2
    assert patches.features.shape == (2, 2 * grid, 64)
    assert patches.mask[0].all() and patches.mask[1, :grid].all() and not patches.mask[1, grid:].any()
    words = enc.encode_texts(["small left pleural effusion", "no pneumothorax"], features="words")
    assert words.features.shape == (2, 47, 64)
    # 4 words + [SEP] and 2 words + [SEP] (word pieces of one word are summed into one word)
    assert words.mask.sum(dim=1).tolist() == [5, 3]


def test_encode_texts_applies_the_training_cleaning_then_the_loader_tokens(enc: MedSTEncoder) -> None:
    from medst.archive.reports import clean_text
    from medst.model.tokenize import encode_texts

    raw = [
        "1. Small LEFT pleural effusion. 2. No pneumothorax.",
        "Heart size is normal.\nLines unchanged, ok.",
    ]
    got = enc.encode_texts(raw, features="all")
    cleaned = [clean_text(r)[0] for r in raw]
    assert cleaned[0] == "small left pleural effusion no pneumothorax"
    tok = {k: torch.from_numpy(v) for k, v in encode_texts(enc.tokenizer, cleaned, 48).items()}
    with torch.inference_mode():
        want = enc.model.encode_text(tok["input_ids"], tok["attention_mask"], tok["word_ids"])
    assert torch.equal(got.embedding, want.embedding) and torch.equal(got.cls, want.cls)
    # cleaning matters: the raw text tokenises differently
    assert not torch.equal(
        enc.encode_texts([cleaned[0].upper() + " ."]), enc.encode_texts(["x " + cleaned[0]])
    )
    # a one-word prompt survives (training cleaning alone would drop its only sentence)
    assert int(enc.tokenize(["Pneumonia."])["attention_mask"].sum()) >= 3


def test_similarity_and_zero_shot_use_the_normalised_mean_of_prompts(
    enc: MedSTEncoder, images: list[Path]
) -> None:
    classes = {
        "effusion": ["small left pleural effusion", "pleural effusion is seen"],
        "normal": ["heart size is normal", "there is no focal consolidation", "no pneumothorax is seen"],
    }
    img = enc.encode_images(images)
    assert isinstance(img, torch.Tensor)
    result = enc.zero_shot(images, classes)
    for k, prompts in enumerate(classes.values()):
        t = enc.encode_texts(prompts)
        class_emb = F.normalize(t.mean(dim=0), dim=-1)
        assert torch.allclose(result.scores[:, k], img @ class_emb, atol=1e-6)
    assert torch.allclose(result.probabilities.sum(dim=1), torch.ones(5), atol=1e-6)
    assert torch.allclose(result.probabilities, torch.softmax(result.scores / 0.07, dim=1))
    assert result.predictions == [result.labels[i] for i in result.scores.argmax(dim=1).tolist()]
    assert set(result.as_dicts()[0]) == {"effusion", "normal"}
    sim = enc.similarity(img, enc.encode_texts(["a", "heart size is normal"]))
    assert sim.shape == (5, 2) and float(sim.abs().max()) <= 1.0 + 1e-6


def test_a_bad_file_raises_a_decode_error_with_a_reason(enc: MedSTEncoder, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageDecodeError) as err:
        enc.encode_images([bad])
    assert err.value.reason == "unreadable_image"


@pytest.mark.realdata
def test_real_dicom_and_its_jpg_rendering_embed_to_the_same_vector(
    enc: MedSTEncoder, realdata: Path, tmp_path: Path
) -> None:
    import cv2

    from medst.archive.pixels import read_image

    dicoms = [realdata / "dicom" / "chest" / n for n in ("siim_sample_pa.dcm", "rsna_sample_ap.dcm")]
    jpgs = []
    for d in dicoms:
        jpg = tmp_path / (d.stem + ".jpg")
        assert cv2.imwrite(
            str(jpg), read_image(d, preset=enc.settings.preset), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        jpgs.append(jpg)
    emb = enc.encode_images(dicoms + jpgs)
    same = F.cosine_similarity(emb[:2], emb[2:])
    assert (same > 0.99).all(), same
    # A random tiny model maps every chest film near one direction, so also ask that the rendering be far closer
    # to its DICOM than the other chest film is (distances 1 - cos; about 1e-7 against 5e-4 here).
    other = 1 - F.cosine_similarity(emb[:1], emb[1:2])
    assert ((1 - same) < 0.1 * other).all(), (same, other)
    # and the pixels the model sees are the same up to JPEG error
    for d, j in zip(dicoms, jpgs, strict=True):
        assert (enc.prepare_image(d) - enc.prepare_image(j)).abs().mean() < 0.02
    # the preset is applied to DICOM files (and only to them): voi differs from mimic-jpg's equalised look
    assert enc.source is not None
    voi = medst.load(enc.source, device="cpu", preset="voi")
    assert (voi.prepare_image(dicoms[0]) - enc.prepare_image(dicoms[0])).abs().mean() > 0.05
    assert torch.equal(voi.prepare_image(jpgs[0]), enc.prepare_image(jpgs[0]))
