"""The loss-law side: law forms, fits, bootstrap, back-tests, calibrated intervals, predict."""
