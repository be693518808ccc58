"""The weight-free engine: toroidal image quilting (`quilting`), wrapped as an engine (`engine`)."""
