"""The model ``p_theta(y | x)``: activations, likelihoods, the MLP, per-sample scores and
Jacobians (batched backprop of output seeds), and the training objective.

Layer 1 of minifim: depends only on the foundation (``minifim._validation``, ``minifim.memory``).
"""
