"""Emulators of the REST CRM APIs the ``rest`` connector's shipped specs read, written from the
vendors' public documentation: real HTTP servers on 127.0.0.1 (see :mod:`.base`)."""
