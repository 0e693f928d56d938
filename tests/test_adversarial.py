"""The GAN family's building blocks (losses/adversarial.py, embedders/generator.py) against
direct computations on tiny inputs."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from recipekit.embedders.generator import (  # noqa: E402
    ConditioningAugmentation, ImageDiscriminator, RecipeImageGenerator, from_tower_input, kl_standard_normal,
    to_tower_input)
from recipekit.losses import adversarial as L  # noqa: E402


class _TanhCritic(torch.nn.Module):
    """D(x) = sum_k c_k tanh(a_k . x): its input gradient is known in closed form."""

    def __init__(self, a, c):
        super().__init__()
        self.a, self.c = torch.nn.Parameter(a), torch.nn.Parameter(c)

    def forward(self, x):
        return torch.tanh(x @ self.a.t()) @ self.c


def test_gradient_penalty_equals_the_direct_computation():
    g = torch.Generator().manual_seed(3)
    a, c = torch.randn(3, 4, generator=g).double(), torch.randn(3, generator=g).double()
    critic = _TanhCritic(a, c)
    real, fake = torch.randn(5, 4, generator=g).double(), torch.randn(5, 4, generator=g).double()
    gp = L.gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(11))
    # the same interpolation weights, then d/dx sum_k c_k tanh(a_k x) = sum_k c_k (1 - tanh^2) a_k
    e = torch.rand(5, 1, generator=torch.Generator().manual_seed(11)).double()
    x = e * real + (1 - e) * fake
    grad = ((1 - torch.tanh(x @ a.t()) ** 2) * c) @ a
    expected = ((grad.norm(dim=1) - 1) ** 2).mean()
    assert float(gp.detach()) == pytest.approx(float(expected), rel=1e-6)
    # a linear critic has the constant gradient w: GP = (||w|| - 1)^2 whatever the points
    lin = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.3, -2.0, 1.0, 0.5]]))
    w = math.sqrt(0.09 + 4 + 1 + 0.25)
    assert float(L.gradient_penalty(lambda t: lin(t).squeeze(-1), real.float(), fake.float())) == pytest.approx(
        (w - 1) ** 2, rel=1e-5)
    # the penalty trains the critic: it has a gradient with respect to the critic's weights
    gp.backward()
    assert critic.a.grad is not None and critic.a.grad.abs().sum() > 0


def test_critic_loss_and_alignment():
    torch.manual_seed(0)
    critic = L.ModalityCritic(6)
    v, r = torch.randn(8, 6), torch.randn(8, 6)
    torch.manual_seed(5)
    loss, gp = L.critic_loss(critic, v, r, gp_weight=10.0)
    torch.manual_seed(5)
    gp2 = L.gradient_penalty(critic, v, r)
    assert float(loss) == pytest.approx(float(critic(r).mean() - critic(v).mean() + 10 * gp2), rel=1e-5)
    assert float(gp) == pytest.approx(float(gp2))
    assert float(L.alignment_loss(critic, r)) == pytest.approx(-float(critic(r).mean()))
    assert critic(v).shape == (8,)


def test_generator_shapes_conditioning_and_kl():
    torch.manual_seed(0)
    for size in (64, 128):
        gen = RecipeImageGenerator(embed_dim=10, image_size=size, cond_dim=6, noise_dim=5, channels=4)
        images, mu, logvar = gen(torch.randn(3, 10))
        assert images.shape == (3, 3, size, size) and mu.shape == (3, 6) == logvar.shape
        assert images.abs().max() <= 1
        d = ImageDiscriminator(size, cond_dim=6, channels=4)
        cond, uncond = d(images, mu)
        assert cond.shape == (3,) == uncond.shape and d.features(images).shape == (3, d.feature_dim)
        assert d(images)[0] is None
    with pytest.raises(ValueError, match="64 or 128"):
        RecipeImageGenerator(10, image_size=96)
    ca = ConditioningAugmentation(10, 4).eval()
    c, mu, _ = ca(torch.randn(2, 10))
    assert torch.equal(c, mu)  # eval mode: the mean code
    ca.train()
    c1, mu1, _ = ca(torch.ones(2, 10), torch.Generator().manual_seed(1))
    c2, _, _ = ca(torch.ones(2, 10), torch.Generator().manual_seed(1))
    assert torch.equal(c1, c2) and not torch.equal(c1, mu1)
    zero = torch.zeros(2, 3)
    assert float(kl_standard_normal(zero, zero)) == 0.0
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]])
    # KL per element: 1/2 (mu^2 + s^2 - 1 - log s^2): 0.5 and 1/2 (4 - 1 - log 4)
    assert float(kl_standard_normal(mu, logvar)) == pytest.approx((0.5 + 0.5 * (3 - math.log(4))) / 2)


def test_tower_input_round_trip():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    back = from_tower_input(to_tower_input(images, 64, mean, std), 64, mean, std)
    torch.testing.assert_close(back, images, atol=1e-5, rtol=0)
    assert to_tower_input(images, 96, mean, std).shape == (2, 3, 96, 96)


def test_translation_losses():
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 0.5, -3.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    p = torch.sigmoid(logits)
    direct = -(targets * p.log() + (1 - targets) * (1 - p).log()).mean()
    assert float(L.ingredient_bce(logits, targets)) == pytest.approx(float(direct), rel=1e-6)
    cls = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 2, 1])  # the background row does not count
    direct = -(torch.log_softmax(cls[1], 0)[2] + torch.log_softmax(cls[2], 0)[1]) / 2
    assert float(L.class_ce(cls, labels)) == pytest.approx(float(direct), rel=1e-6)
    assert float(L.class_ce(cls, torch.zeros(3, dtype=torch.long))) == 0.0
    a, b = torch.tensor(4.0, requires_grad=True), torch.tensor(1.0, requires_grad=True)
    a2, b2 = L.balance(a, b)
    assert float(a2) == pytest.approx(1.0) and b2 is b
    a2.backward()
    assert float(a.grad) == pytest.approx(0.25)  # the ratio is a constant


def test_image_level_ranking_and_reconstruction():
    real = torch.stack([torch.full((3, 2, 2), v) for v in (-1.0, 0.0, 1.0)])
    assert float(L.image_level_ranking(real.clone(), real, margin=0.5)) == 0.0  # each closest to its own by >= 1
    gen = real.flip(0)  # image 0 generated like photo 2, ...
    d = torch.tensor([[4.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 4.0]])  # mean squared distances
    hinge = (0.5 + d.diagonal()[:, None] - d).clamp_min(0)
    expected = hinge[~torch.eye(3, dtype=torch.bool)].mean()
    assert float(L.image_level_ranking(gen, real, margin=0.5)) == pytest.approx(float(expected))
    torch.manual_seed(0)
    f = [torch.randn(2, 5) for _ in range(3)]
    x = [torch.randn(2, 3, 4, 4) for _ in range(3)]
    mse = torch.nn.functional.mse_loss
    expected = 0.5 * (mse(f[1], f[0]) + mse(f[2], f[1]) + 2.0 * (mse(x[1], x[0]) + mse(x[2], x[1])))
    assert float(L.reconstruction_loss(*f, *x, beta=2.0)) == pytest.approx(float(expected), rel=1e-6)


def test_discriminator_and_generator_bce():
    real, fake = torch.tensor([3.0, -1.0]), torch.tensor([0.0, 2.0])
    sp = torch.nn.functional.softplus
    expected = (sp(-real).mean() + sp(fake).mean())
    assert float(L.discriminator_bce([real, None], [fake, None])) == pytest.approx(float(expected), rel=1e-6)
    assert float(L.generator_bce([fake, None])) == pytest.approx(float(sp(-fake).mean()), rel=1e-6)
