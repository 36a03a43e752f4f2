def gaussian_sgld_target(curvatures, nbeta, localization, step_size):
    """E[λ̂] for K = ½Σ a_i w_i² under full-batch SGLD (step-size bias, docs/theory.md), exact."""
    t, g, e = nbeta, localization, step_size
    return sum(0.5 * (t * a / (t * a + g)) / (1 - e * (t * a + g) / 4) for a in curvatures)


def least_squares_linear(noise=0.1, dtype=None):
    """``nn.Linear(3, 1)`` at the exact least-squares minimum of 400 Gaussian examples (seed 0): a regular
    model at its minimum (λ = d/2 = 2), and its data ``(x, y)``."""
    import torch
    from torch import nn

    dtype = dtype or torch.float32
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=g, dtype=dtype)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=dtype) + noise * torch.randn(400, generator=g, dtype=dtype)
    model = nn.Linear(3, 1).to(dtype)
    sol = torch.linalg.lstsq(torch.cat([x, torch.ones(400, 1, dtype=dtype)], 1), y[:, None]).solution
    with torch.no_grad():
        model.weight.copy_(sol[:3].T)
        model.bias.copy_(sol[3])
    return model, (x, y)
