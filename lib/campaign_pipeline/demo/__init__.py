"""The demo: `campaign-pipeline demo` (`command.py`) and its local services (`services.py`: a gateway
simulator, SQS in a moto server, a mail worker). Never imported by the jobs a cluster runs."""
