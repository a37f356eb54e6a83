"""Full-ranking evaluation: metrics, the evaluator, baselines, reports and the evaluate stage."""
