"""Fixed sub-layer costs for the cost model: the diagnosis objective is then the same in every process (timed costs
differ a little from process to process), so two runs of one search can be compared trial by trial."""

from rad.eval.cost_model import SubLayerCosts


def fixed_costs(model, batch, context, width) -> SubLayerCosts:
    """In place of rad.eval.profiling.measure_costs."""
    return SubLayerCosts(width, (1e-3, 1.2e-3), (1e-3, 1.1e-3), (5e-4, 6e-4), model.config.num_layers,
                         len(model.config.attention_layers))
