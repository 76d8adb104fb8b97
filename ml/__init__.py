"""Training and evaluation of the LSTM detector (built by the detection work)."""
