"""How `FederatedTrainer` trains: configuration, client data, the round loop, the report.

* `config`: every argument checked once, into a frozen `TrainerConfig`;
* `client_data` and `data_checks`: client data from the user's forms to each
  round's inputs, checked against the model before round 0;
* `model`: the TFF model function and the method's process;
* `loop`: the round loop (callbacks, History, checkpoints via `checkpoint`);
* `report`: a round's metrics as logs; `console`: set-up and interrupt messages.
"""
