"""One-shot training: supernet training rules, the supernet trainer, progressive shrinking (OFA)
and the bilevel (differentiable) search epoch."""
