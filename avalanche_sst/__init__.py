"""avalanche-sst."""
