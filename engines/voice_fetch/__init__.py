"""The model fetcher: downloads one (ModelAsset, version) into its folder on the PVC.

Run by the operator as a Job (`voice-fetch`); see docs/fetch.md for the contract.
"""
