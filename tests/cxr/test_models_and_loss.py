"""GG-CAM's network (CAM head, backbones, one-channel weights) and its loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from tests.tolerances import assert_close_to_scale
from visprior.cxr.loss import gaze_guided_loss
from visprior.nets.ggcam import CAMHead, GazeLossWeights, load_backbone_weights
from visprior.nets.registry import get_model


def test_cam_head_logits_are_the_mean_of_the_maps_plus_bias():
    torch.manual_seed(0)
    head = CAMHead(in_channels=6, num_classes=3)
    head.bias.data = torch.tensor([0.5, -1.0, 2.0])
    features = torch.randn(2, 6, 4, 5)
    logits, cams = head(features)
    expected_cams = (head.weight[None, :, :, None, None] * features[:, None]).mean(dim=2)
    torch.testing.assert_close(cams, expected_cams)
    torch.testing.assert_close(logits, expected_cams.mean(dim=(2, 3)) + head.bias)


@pytest.mark.parametrize(
    ("name", "channels", "grid"),
    [("ggcam_resnet18", 512, 2), ("ggcam-resnet50", 2048, 2), ("ggcam_efficientnet_v2_s", 1280, 2)],
)
def test_backbones_give_logits_and_cams_on_the_stride_32_grid(name, channels, grid):
    net = get_model(name, num_classes=3).eval()
    with torch.no_grad():
        logits, cams = net(torch.rand(2, 1, 64, 64))
    assert logits.shape == (2, 3) and cams.shape == (2, 3, grid, grid)
    assert net.head.in_channels == channels


def test_resnet50_size_is_torchvision_body_plus_three_class_head_plus_three_scalars():
    body = torchvision.models.resnet50(weights=None)
    body_params = sum(p.numel() for n, p in body.named_parameters() if not n.startswith("fc."))
    one_channel_stem_saving = 64 * 2 * 7 * 7
    net = get_model("ggcam_resnet50", num_classes=3)
    expected = body_params - one_channel_stem_saving + (2048 * 3 + 3) + 3
    assert sum(p.numel() for p in net.parameters()) == expected == 23_508_032 - 6272 + 6150


def test_imagenet_weights_on_one_channel_equal_the_grey_image_fed_three_times(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    for module in reference.modules():  # non-trivial BN statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(reference.state_dict(), path)
    net = get_model("ggcam_resnet18", num_classes=3, weights=str(path), normalize=False).eval()
    missing = load_backbone_weights(net, path)
    assert missing == []
    grey = torch.rand(1, 1, 64, 64)
    body = torch.nn.Sequential(*list(reference.children())[:-2])
    with torch.no_grad():
        expected = body(grey.expand(-1, 3, -1, -1))
        got = net.backbone(grey)
    assert_close_to_scale(got, expected, rtol=1e-4)  # one summed stem weight vs three


def test_weights_file_that_fits_nothing_is_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="other.pth: no tensor"):
        get_model("ggcam_resnet18", weights=str(path))


def _output(batch=2, classes=3, grid=4, seed=0):
    torch.manual_seed(seed)
    cams = torch.randn(batch, classes, grid, grid, requires_grad=True)
    logits = cams.mean(dim=(2, 3))
    return logits, cams


def test_each_of_the_three_scalars_gets_a_gradient():
    weights = GazeLossWeights(0.1, -0.2, 0.3)
    logits, cams = _output()
    gaze = torch.rand(2, 4, 4)
    parts = gaze_guided_loss((logits, cams), torch.tensor([0, 2]), weights, gaze)
    parts.total.backward()
    for name in ("lg_s_c", "lg_s_d", "lg_k"):
        grad = getattr(weights, name).grad
        assert grad is not None and grad.abs() > 1e-6, name


def test_the_gaze_term_looks_at_the_true_class_map_only():
    weights = GazeLossWeights()
    logits, cams = _output(classes=3)
    target = torch.tensor([2, 1])
    gaze = torch.rand(2, 4, 4)
    parts = gaze_guided_loss((logits.detach(), cams), target, weights, gaze)
    parts.total.backward()
    for i, true_class in enumerate(target.tolist()):
        for k in range(3):
            touched = bool(cams.grad[i, k].abs().sum() > 0)
            assert touched == (k == true_class), (i, k)
    # and D is the MSE of sigmoid(k * CAM_y) against the gaze map, with k = exp(lg_k)
    expected = F.mse_loss(torch.sigmoid(cams[[0, 1], target]), gaze)
    torch.testing.assert_close(parts.gaze, expected.detach())


def test_loss_formula_with_known_scalars():
    weights = GazeLossWeights(lg_s_c=0.5, lg_s_d=-0.5, lg_k=0.0)
    logits, cams = _output()
    target = torch.tensor([1, 0])
    gaze = torch.rand(2, 1, 4, 4)  # a channel axis is accepted
    parts = gaze_guided_loss((logits, cams), target, weights, gaze)
    s_c, s_d = torch.exp(torch.tensor(0.5)), torch.exp(torch.tensor(-0.5))
    ce = F.cross_entropy(logits, target)
    d = F.mse_loss(torch.sigmoid(cams[[0, 1], target]), gaze[:, 0])
    expected = ce / s_c**2 + torch.log(s_c + 1) + d / (2 * s_d**2) + torch.log(s_d + 1)
    torch.testing.assert_close(parts.total, expected)


def test_without_gaze_the_loss_is_cross_entropy():
    logits, cams = _output()
    target = torch.tensor([1, 0])
    parts = gaze_guided_loss((logits, cams), target, GazeLossWeights())
    torch.testing.assert_close(parts.total, F.cross_entropy(logits, target))
    assert torch.isnan(parts.gaze)


def test_gaze_on_another_grid_is_refused():
    logits, cams = _output(grid=4)
    with pytest.raises(ValueError, match=r"do not match the CAM grid \(4, 4\)"):
        gaze_guided_loss(
            (logits, cams), torch.tensor([0, 1]), GazeLossWeights(), torch.rand(2, 7, 7)
        )


@pytest.mark.parametrize("name", ["ggcam_resnet18", "ggcam_resnet50"])
def test_output_stride_16_doubles_the_cam_grid_with_the_same_weights(name):
    coarse = get_model(name, num_classes=3)
    fine = get_model(name, num_classes=3, output_stride=16)
    fine.load_state_dict(coarse.state_dict())  # same parameter shapes
    with torch.no_grad():
        assert fine.eval()(torch.rand(1, 1, 64, 64)).cams.shape[-2:] == (4, 4)
    with pytest.raises(ValueError, match="output_stride must be 32 or 16"):
        get_model(name, output_stride=8)
