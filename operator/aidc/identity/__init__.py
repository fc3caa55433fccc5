"""Who an object is and whose: the names, labels and owner references every role shares.

Compute, network and storage each render objects of one job or service; what they must agree
on (the rendezvous address, the claim's name, the labels that find a job's objects) is here,
below all three, so none of them imports another.
"""
