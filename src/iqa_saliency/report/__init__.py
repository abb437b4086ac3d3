"""Reading run folders back: the sweep report, all figures, and the experiment loggers."""
