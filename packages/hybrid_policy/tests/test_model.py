import pytest
import torch

from kinema.hybrid_policy import HybridConfig, HybridPolicyModel
from kinema.hybrid_policy.testing import tiny_config


def batch(b: int = 3, seed: int = 0, chunk: int = 8) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (b, 1, 64, 64, 3), generator=g, dtype=torch.uint8),
        "qpos": torch.rand(b, 2, generator=g),
        "environment_state": torch.rand(b, 4, generator=g),
        "action": torch.rand(b, chunk, 2, generator=g) * 2 - 1,
        "is_pad": torch.zeros(b, chunk, dtype=torch.bool),
    }


def model(variant: str, **overrides) -> HybridPolicyModel:
    torch.manual_seed(0)
    return HybridPolicyModel(tiny_config(variant=variant, **overrides)).eval()


def test_denoiser_output_is_zero_at_init():
    net = model("C")
    memory, pos, _ = net.encode(batch())
    noisy = torch.randn(3, 8, 2)
    out = net.denoiser(noisy, torch.tensor([0, 4, 9]), memory, pos, torch.randn(3, 32))
    assert torch.equal(out, torch.zeros_like(out))


def test_variant_a_ignores_z():
    net = model("A")
    assert net.z_embed is None and net.prior is None and net.style_net is None
    noise = torch.randn(3, 8, 2)
    with torch.no_grad():  # move off the zero-init so the check is not trivial
        for parameter in net.denoiser.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    a = net.sample(batch(), z=torch.zeros(3, 4), noise=noise)
    b = net.sample(batch(), z=torch.randn(3, 4) * 10, noise=noise)
    assert torch.equal(a, b)


def test_variant_b_z_is_deterministic_and_depends_on_the_observation():
    net = model("B")
    _, _, pooled = net.encode(batch())
    z1 = net.infer_z(pooled, generator=torch.Generator().manual_seed(1))
    z2 = net.infer_z(pooled, generator=torch.Generator().manual_seed(2))
    assert torch.equal(z1, z2)
    _, _, other = net.encode(batch(seed=5))
    assert not torch.allclose(net.infer_z(other), z1)


def test_variant_c_samples_the_prior_and_temperature_zero_is_its_mean():
    net = model("C")
    _, _, pooled = net.encode(batch())
    mu, _ = net.prior_params(pooled)
    assert torch.allclose(net.infer_z(pooled, temperature=0.0), mu)
    z1 = net.infer_z(pooled, generator=torch.Generator().manual_seed(1))
    z2 = net.infer_z(pooled, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(z1, z2)


def test_variant_b_and_c_outputs_depend_on_z():
    for variant in ("B", "C"):
        net = model(variant)
        with torch.no_grad():  # move off the zero-init so every path carries signal
            for parameter in net.denoiser.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.2)
        noise = torch.randn(3, 8, 2)
        a = net.sample(batch(), z=torch.zeros(3, 4), noise=noise)
        b = net.sample(batch(), z=torch.ones(3, 4) * 3, noise=noise)
        assert not torch.allclose(a, b), variant


def test_loss_terms_by_variant_and_beta_follows_the_schedule():
    torch.manual_seed(0)
    c = HybridPolicyModel(tiny_config(variant="C", kl_schedule="linear:0.5:10", free_bits=0.0))
    loss, terms = c.compute_loss(batch(), step=4)
    assert set(terms) == {"kl", "kl_free_bits", "beta", "diffusion", "loss"}
    assert terms["beta"].item() == pytest.approx(0.2)
    assert loss.item() == pytest.approx(terms["diffusion"].item() + 0.2 * terms["kl"].item(), rel=1e-5)
    a_loss, a_terms = model("A").train().compute_loss(batch())
    assert set(a_terms) == {"diffusion", "loss"} and a_loss.item() == pytest.approx(
        a_terms["diffusion"].item()
    )


def test_sample_shape_and_range():
    net = model("C")
    net.set_normalization(
        {"qpos": {"mean": [0, 0], "std": [1, 1]}, "environment_state": {"mean": [0] * 4, "std": [1] * 4},
         "action": {"min": [0.0, -2.0], "max": [1.0, 2.0]}}
    )  # fmt: skip
    out = net.sample(batch(), generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 8, 2)
    assert out[..., 0].min() >= 0 and out[..., 0].max() <= 1
    assert out[..., 1].min() >= -2 and out[..., 1].max() <= 2


def test_unknown_variant_names_the_argument():
    with pytest.raises(ValueError, match="variant: unknown 'D'"):
        HybridConfig(variant="D")


@pytest.mark.parametrize("steps", [0, -1, 11, 2.5])
def test_bad_sampling_steps_name_the_argument(steps):
    net = model("C")
    with pytest.raises(ValueError, match="num_inference_steps"):
        net.sample(batch(), num_inference_steps=steps)
    with pytest.raises(ValueError, match="num_inference_steps"):
        tiny_config(num_inference_steps=steps)


def test_reused_inference_schedulers_start_over_on_every_query():
    net = model("C")
    for parameter in net.denoiser.parameters():  # leave the zero init, so samples depend on every step
        torch.nn.init.normal_(parameter, std=0.2)
    obs = {k: v for k, v in batch().items() if k in ("image", "qpos", "environment_state")}
    noise, z = torch.randn(3, 8, 2), torch.randn(3, net.config.latent_dim)
    with torch.no_grad():
        first = net.sample(obs, z=z, noise=noise, num_inference_steps=4)
        solver = net.sample(obs, z=z, noise=noise, num_inference_steps=3, sampler="dpmsolver++")
        solver_again = net.sample(obs, z=z, noise=noise, num_inference_steps=3, sampler="dpmsolver++")
        again = net.sample(obs, z=z, noise=noise, num_inference_steps=4)
    assert torch.equal(first, again) and torch.equal(solver, solver_again)
    assert not torch.allclose(first, solver)


def test_compile_inference_rejects_unknown_modes():
    with pytest.raises(ValueError, match="mode: expected"):
        model("C").compile_inference("fastest")


@pytest.mark.parametrize("variant", ["A", "B", "C"])
def test_compiled_ddim_query_gives_the_eager_chunk(variant, monkeypatch):
    """The one-graph DDIM query (here traced eagerly: torch.compile is replaced by the identity) draws z and the
    noise in the eager order and runs the same steps, so the same seed gives the same chunk."""
    eager, graph = model(variant), model(variant)
    for net in (eager, graph):
        torch.manual_seed(1)
        for parameter in net.denoiser.parameters():
            torch.nn.init.normal_(parameter, std=0.2)
    monkeypatch.setattr(torch, "compile", lambda fn, **options: fn)
    graph.compile_inference()
    obs = {k: v for k, v in batch().items() if k in ("image", "qpos", "environment_state")}
    expected = eager.sample(obs, num_inference_steps=4, generator=torch.Generator().manual_seed(3))
    got = graph.sample(obs, num_inference_steps=4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    solver = graph.sample(obs, sampler="dpmsolver++", num_inference_steps=3, generator=torch.Generator())
    assert solver.shape == expected.shape  # other samplers: compiled pieces, diffusers scheduler
