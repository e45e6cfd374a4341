"""Privacy audit: does a synthetic set copy training studies? (The copy search is built; calibration,
planted-copy power, membership inference and the report come next.)"""
