# Install rules: filled in by the packaging work (see README, "Install").
