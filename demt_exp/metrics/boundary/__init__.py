"""The SEISM boundary evaluation (odsF): protocols, thinning, pixel matching, NMS, pooling and parallel counting."""
