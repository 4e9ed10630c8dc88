"""hal.examples: builders of the example graphs shipped under examples/."""
