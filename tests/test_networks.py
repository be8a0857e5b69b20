"""The networks: UNet-328 and its audio heads, the SyncNet critic, and the training losses (CPU, tiny widths)."""

from __future__ import annotations

import pytest
import torch

from synctalk.audio.registry import ASR_MODELS, get_spec
from synctalk.errors import SyncTalkError
from synctalk.losses import PerceptualLoss, VGG19Features, load_perceptual_loss, sync_loss
from unet_328 import SyncNet, build_unet, count_parameters

torch.set_num_threads(2)


def _audio(asr: str, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *get_spec(asr).tensor_shape, generator=g)


def _images(batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 6, 320, 320, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("asr", ASR_MODELS)
def test_unet_shapes_and_range_for_every_audio_model(asr: str) -> None:
    net = build_unet(asr, "tiny").eval()
    with torch.no_grad():
        out = net(_images(), _audio(asr))
        assert net.audio_model(_audio(asr, batch=2)).shape == (2, 32, 10, 10)
    assert out.shape == (1, 3, 320, 320)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    extra = {"audio_dim": get_spec(asr).feature_dim} if get_spec(asr).free_dim else {}
    assert net.config == {"asr": asr, "width": "tiny", **extra}


@pytest.mark.parametrize("asr", ASR_MODELS)
def test_syncnet_embeddings_unit_norm_and_logits_finite(asr: str) -> None:
    net = SyncNet(asr, "tiny").eval()
    face = torch.rand(2, 3, 320, 320)
    with torch.no_grad():
        a, v = net(face, _audio(asr, batch=2))
        logits = net.logits(a, v)
    assert a.shape == (2, 512) and v.shape == (2, 512)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(v.norm(dim=1), torch.ones(2))
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    # the face encoder sees only the mouth band of the crop (rows 64:224)
    changed = face.clone()
    changed[:, :, :64] = torch.rand(2, 3, 64, 320)
    changed[:, :, 224:] = torch.rand(2, 3, 96, 320)
    with torch.no_grad():
        torch.testing.assert_close(net.encode_face(changed), v)


def test_full_width_parameter_counts() -> None:
    full = count_parameters(build_unet("ave", "full"))
    mobile = count_parameters(build_unet("ave", "mobile"))
    assert 10e6 < full < 14e6
    assert mobile < full / 3
    assert count_parameters(SyncNet("ave", "full")) > count_parameters(SyncNet("ave", "mobile"))


def test_full_width_checkpoint_layout() -> None:
    """Key names and shapes of the full-width ave UNet follow the SyncTalk_2D checkpoint layout."""
    sd = build_unet("ave", "full").state_dict()
    assert len(sd) == 556
    assert sd["inc.inconv.0.conv.0.weight"].shape == (12, 6, 1, 1)
    assert sd["down5.maxpool_conv.0.double_conv.1.conv.7.running_var"].shape == (512,)
    assert sd["audio_model.conv5.weight"].shape == (512, 256, 3, 3)
    assert sd["fuse_conv.0.double_conv.0.conv.0.weight"].shape == (2048, 1024, 1, 1)
    assert sd["up5.conv.double_conv.0.conv.0.weight"].shape == (128, 64, 1, 1)
    assert sd["outc.conv.weight"].shape == (3, 16, 1, 1)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("sizes", [((10, 10), (20, 20)), ((5, 4), (9, 13)), ((1, 3), (4, 7))])
def test_upsample_matches_interpolate_and_its_gradient(sizes, channels_last: bool) -> None:
    """The UNet's upsampling is F.interpolate(bilinear, align_corners=True), gradient included."""
    from unet_328.model import upsample_bilinear

    (h, w), size = sizes
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64)
    grad = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
    if channels_last:
        x, grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad))
    ours, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = upsample_bilinear(ours, size)
    y_ref = torch.nn.functional.interpolate(ref, size=size, mode="bilinear", align_corners=True)
    y.backward(grad)
    y_ref.backward(grad)
    assert torch.equal(y, y_ref)
    assert torch.allclose(ours.grad, ref.grad, atol=1e-12)
    assert ours.grad.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_conv_is_a_conv2d_with_its_gradients(stride: int, channels_last: bool) -> None:
    from unet_328.model import DepthwiseConv2d

    torch.manual_seed(0)
    dw = DepthwiseConv2d(6, stride).double()
    ref = torch.nn.Conv2d(6, 6, 3, stride, 1, groups=6, bias=False).double()
    ref.load_state_dict(dw.state_dict())  # the same parameters under the same key
    x = torch.randn(2, 6, 11, 12, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, y_ref = dw(ours), ref(theirs)
    grad = torch.randn_like(y_ref)
    y.backward(grad)
    y_ref.backward(grad)
    assert torch.allclose(y, y_ref, atol=1e-12)
    assert torch.allclose(ours.grad, theirs.grad, atol=1e-12)
    assert torch.allclose(dw.weight.grad, ref.weight.grad, atol=1e-12)


def test_depthwise_conv_folded_with_batchnorm_keeps_its_bias() -> None:
    """Folding BatchNorm (the renderer does) adds a bias, which the output must include with or without grad."""
    from synctalk.render import fuse_conv_bn
    from unet_328.model import DepthwiseConv2d

    torch.manual_seed(0)
    seq = torch.nn.Sequential(DepthwiseConv2d(4), torch.nn.BatchNorm2d(4)).eval()
    seq[1].running_mean.uniform_(-1, 1)
    seq[1].running_var.uniform_(0.5, 2)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        expected = seq(x)
    fused = fuse_conv_bn(seq)
    assert fused[0].bias is not None
    assert torch.allclose(fused(x), expected, atol=1e-5)  # grad enabled, weights requiring grad


def test_depthwise_conv_gradients_under_autocast() -> None:
    """Under bf16 autocast the forward runs in bf16 with an fp32 weight: the backward must cast back."""
    from unet_328.model import DepthwiseConv2d

    dw = DepthwiseConv2d(4)
    x = torch.randn(2, 4, 8, 8).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = dw(x)
    y.float().square().sum().backward()
    assert y.dtype == torch.bfloat16
    assert dw.weight.grad.dtype == torch.float32 and torch.isfinite(dw.weight.grad).all()
    assert x.grad.dtype == torch.bfloat16 and x.grad.abs().sum() > 0


def test_unknown_width_and_wrong_audio_are_clear_errors() -> None:
    with pytest.raises(SyncTalkError, match="width"):
        build_unet("ave", "huge")
    net = build_unet("ave", "tiny")
    with pytest.raises(SyncTalkError, match="hubert|audio"):
        net(_images(), _audio("hubert"))
    with pytest.raises(SyncTalkError, match="audio"):
        SyncNet("ave", "tiny")(torch.rand(1, 3, 320, 320), _audio("wenet"))


def test_gradient_step_changes_weights() -> None:
    torch.manual_seed(0)
    net = build_unet("hubert", "tiny").train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    img, aud = _images(2), _audio("hubert", 2)
    target = img[:, 3:]
    loss0 = torch.nn.functional.l1_loss(net(img, aud), target)
    opt.zero_grad()
    loss0.backward()
    opt.step()
    moved = [k for k, v in net.named_parameters() if not torch.equal(v, before[k])]
    assert "audio_model.conv1.conv.0.weight" in moved and "outc.conv.weight" in moved and "inc.inconv.0.conv.0.weight" in moved
    assert len(moved) == len(before)


def test_mel_head_depends_on_audio() -> None:
    torch.manual_seed(0)
    # training mode: at initialisation the running batch-norm statistics are placeholders, so an
    # untrained network in eval mode attenuates every input; batch statistics show the real wiring
    net = build_unet("mel", "tiny").train()
    img = _images()
    audio = _audio("mel").requires_grad_(True)
    out = net(img, audio)
    out.mean().backward()
    assert audio.grad is not None and audio.grad.abs().sum() > 0
    with torch.no_grad():
        other = net(img, _audio("mel", seed=1))
    assert (other - out.detach()).abs().max() > 1e-2


def test_syncnet_training_step_and_sync_loss_gradient() -> None:
    torch.manual_seed(0)
    net = SyncNet("mel", "tiny")
    face, audio = torch.rand(4, 3, 320, 320), _audio("mel", 4)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    scale_before = net.logit_scale.detach().clone()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net.logits(*net(face, audio)), labels)
    loss.backward()
    opt.step()
    assert net.logit_scale.detach() != scale_before
    # as a frozen critic: the loss is a finite scalar and its gradient reaches the generated face
    opt.zero_grad(set_to_none=True)
    net.eval().requires_grad_(False)
    gen = torch.rand(2, 3, 320, 320, requires_grad=True)
    sl = sync_loss(net, gen, audio[:2])
    sl.backward()
    assert sl.dim() == 0 and torch.isfinite(sl)
    assert gen.grad is not None and gen.grad[:, :, 160:].abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_the_relative_sync_loss_asks_only_to_be_as_in_sync_as_the_real_frame() -> None:
    torch.manual_seed(0)
    for frames in (1, 3):
        net = SyncNet("mel", "tiny", face_frames=frames).eval().requires_grad_(False)
        real, audio = torch.rand(2 * frames, 3, 320, 320), _audio("mel", 2 * frames)
        # a prediction equal to its real frames: nothing to ask, whatever the critic thinks of them
        assert float(sync_loss(net, real.clone(), audio, real)) == 0.0
        gen = (real + 0.3 * torch.randn_like(real)).requires_grad_(True)
        rel = sync_loss(net, gen, audio, real)
        # per run: max(0, BCE(generated) - BCE(real)), read from two absolute losses of that run
        per_run = [max(0.0, float(sync_loss(net, gen.detach()[i:i + frames], audio[i:i + frames]))
                       - float(sync_loss(net, real[i:i + frames], audio[i:i + frames])))
                   for i in range(0, 2 * frames, frames)]
        assert abs(float(rel.detach()) - sum(per_run) / len(per_run)) < 1e-5
        if float(rel.detach()) > 0:
            rel.backward()
            assert gen.grad is not None and gen.grad.abs().sum() > 0
        assert all(p.grad is None for p in net.parameters())


def test_the_unet_loss_adds_the_sync_term_only_from_its_start() -> None:
    from synctalk.training.unet import UNetLosses

    torch.manual_seed(0)
    net = SyncNet("mel", "tiny").eval().requires_grad_(False)
    pred, target, audio = torch.rand(2, 3, 320, 320), torch.rand(2, 3, 320, 320), _audio("mel", 2)
    l1 = float((pred - target).abs().mean())
    for mode, real in (("absolute", None), ("relative", target)):
        losses = UNetLosses(perceptual=None, perceptual_weight=0.0, syncnet=net, sync_weight=0.5, sync_mode=mode)
        total, parts = losses(pred, target, audio)
        expected = float(sync_loss(net, pred, audio, real))
        assert float(parts[3]) == pytest.approx(expected) and float(total) == pytest.approx(l1 + 0.5 * expected)
        if mode == "absolute":
            assert expected > 0  # the critic's term really takes part
        total, parts = losses(pred, target, audio, sync=False)  # an epoch before --sync_start_epoch
        assert float(parts[3]) == 0.0 and float(total) == pytest.approx(l1)


def _torchvision_layout_state_dict() -> dict[str, torch.Tensor]:
    """A randomly initialised state dict shaped like torchvision's vgg19 (features + classifier)."""
    sd = {k: v.clone() for k, v in VGG19Features().state_dict().items()}
    # deeper feature layers and the classifier are present in the real file and must be ignored
    sd["features.16.weight"] = torch.randn(256, 256, 3, 3)
    sd["features.16.bias"] = torch.zeros(256)
    sd["classifier.0.weight"] = torch.randn(8, 16)
    sd["classifier.0.bias"] = torch.zeros(8)
    return sd


def test_vgg_loader_accepts_torchvision_layout_file(tmp_path) -> None:
    sd = _torchvision_layout_state_dict()
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(sd, path)
    loss = PerceptualLoss(path)
    torch.testing.assert_close(loss.vgg.features[14].weight, sd["features.14.weight"])
    assert not loss.training and not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.training
    pred = torch.rand(1, 3, 48, 48, requires_grad=True)
    target = torch.rand(1, 3, 48, 48)
    value = loss(pred, target)
    value.backward()
    assert value.dim() == 0 and value > 0 and pred.grad is not None
    assert loss(target, target).item() == 0.0


def test_vgg_loader_rejects_wrong_file(tmp_path) -> None:
    wrong = tmp_path / "not_vgg.pth"
    torch.save({"conv.weight": torch.randn(3, 3)}, wrong)
    with pytest.raises(SyncTalkError, match="not a VGG19 checkpoint"):
        PerceptualLoss(wrong)
    bad_shape = _torchvision_layout_state_dict()
    bad_shape["features.5.weight"] = torch.randn(128, 32, 3, 3)
    with pytest.raises(SyncTalkError, match="shape mismatch"):
        PerceptualLoss(state_dict=bad_shape)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(SyncTalkError, match="cannot read VGG19 weights"):
        PerceptualLoss(garbage)
    with pytest.raises(SyncTalkError, match="not found"):
        PerceptualLoss(tmp_path / "missing.pth")


def test_load_perceptual_loss_specs() -> None:
    assert load_perceptual_loss("none") is None
    with pytest.raises(SyncTalkError, match="vgg19"):
        load_perceptual_loss("lpips")
