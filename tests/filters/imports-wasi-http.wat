;; A component that imports wasi:http's outgoing handler: the host must
;; refuse to load it, naming the import.
(component
  (import "wasi:http/outgoing-handler@0.2.0" (instance))
)
