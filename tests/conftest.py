def gaussian_sgld_target(curvatures, nbeta, localization, step_size):
    """E[λ̂] for K = ½Σ a_i w_i² under full-batch SGLD (step-size bias, docs/theory.md), exact."""
    t, g, e = nbeta, localization, step_size
    return sum(0.5 * (t * a / (t * a + g)) / (1 - e * (t * a + g) / 4) for a in curvatures)
