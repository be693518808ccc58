"""Drawing: the Variants panel and the preferences. Draws only; imports nothing from operators/."""
