"""Scheduler configs shared by model families."""

# SD v1.x's noise schedule (scaled_linear betas 0.00085..0.012 over 1000 steps, epsilon prediction) as a
# DPMSolverMultistepScheduler config; PNDM and Euler read the same beta keys.
SD1_SCHEDULER = ("diffusers.DPMSolverMultistepScheduler", {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "steps_offset": 1, "set_alpha_to_one": False, "skip_prk_steps": True,
    "clip_sample": False, "trained_betas": None,
})
