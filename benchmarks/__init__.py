"""fastmm's asv benchmark suite (see asv.conf.json and README.md)."""
