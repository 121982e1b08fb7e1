"""The math of every method as small pure functions, each tested alone on hand values.

* :mod:`.sparsity`, :mod:`.reinit`, :mod:`.losses`: the SST framework (Lee & Kim 2023), eq. 1-9;
  :mod:`.baseline_losses`: its DML and LwM baselines; :mod:`.checks`: shared argument checks;
* :mod:`.m2kd_losses`: M2KD (Zhou et al. 2020), eq. 1-4;
* :mod:`.ownership`: per-weight ownership masks, exact freezing, magnitude
  pruning and sub-network evaluation, shared by M2KD and Ada-QPacknet;
* :mod:`.quantization`, :mod:`.adaptive_pruning`: Ada-QPacknet (Pietron et al.
  2023), Alg. 1-3 and eq. 6-10;
* :mod:`.filter_pruning`, :mod:`.edge_transfer`: the edge method (Zhao, Chen &
  Zhao), sec. 3 and 4.

Import the modules themselves (``from avalanche_sst.functional.sparsity import ...``).
"""
