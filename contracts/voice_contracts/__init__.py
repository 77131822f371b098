"""The wires between the operator and the programs it runs: what each side writes and the
other reads, defined once. Pydantic only, so every image can carry it.

- `layout`: where things are mounted inside the pods;
- `routes`: the routes file the operator writes and the gateway reads;
- `fetch`: the download Job's input, its status report and its exit codes;
- `env`: each engine's (and the gateway's) environment variables;
- `logs`: the time format of every log line.
"""

GROUP = "voiceops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
