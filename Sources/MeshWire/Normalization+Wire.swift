import MeshProto
import MeshTensor

extension Pipemesh_V1_InputNormalization {
  /// `method` fitted on `inputs` (examples along the first axis): the method
  /// with its offset and scale per feature, or none. A model whose first
  /// layer is an embedding reads token ids, which are not rescaled: a method
  /// other than none for it is refused with a `WireError` naming `field`.
  public static func fitted(
    _ method: Pipemesh_V1_NormalizationMethod, on inputs: Tensor, model: Sequential, field: String
  ) throws -> Self {
    guard let kind = try Self.kind(of: method, model: model, field: field) else { return Self() }
    let normalizer = Normalizer(kind, fittedOn: inputs)
    return .with {
      $0.method = method
      $0.offset = normalizer.offset
      $0.scale = normalizer.scale
    }
  }

  /// The rescaling recorded here (a model's, given back by ImportModel) for
  /// `model`: nil for none. A method without parameters, parameters without a
  /// method, or any method for a model that reads token ids are
  /// refused with a `WireError` naming `field`.
  public func checked(for model: Sequential, field: String) throws -> Normalizer? {
    let kind = try Self.kind(of: method, model: model, field: field)
    let normalizer = try normalizer(features: model.activationShapes[0].reduce(1, *), field: field)
    guard (kind == nil) == (normalizer == nil) else {
      throw WireError(
        "\(field): give a method with its offsets and scales (as an exported record has them), or neither")
    }
    return normalizer
  }

  /// The method's kind, or nil for none; refuses an unknown method, and any
  /// method for a model whose first layer is an embedding (token ids are
  /// not rescaled).
  private static func kind(
    of method: Pipemesh_V1_NormalizationMethod, model: Sequential, field: String
  ) throws -> Normalizer.Method? {
    let kind: Normalizer.Method
    switch method {
    case .none: return nil
    case .standardize: kind = .standardize
    case .minMax: kind = .minMax
    case .UNRECOGNIZED(let value):
      throw WireError("\(field).method is \(value); give a NormalizationMethod")
    }
    if let first = model.layers.first as? Embedding {
      throw WireError(
        "\(field): the model's first layer (\(first.name)) reads token ids, which are not rescaled: "
          + "give NORMALIZATION_METHOD_NONE")
    }
    return kind
  }

  /// The rescaling recorded here for examples of `features` scalars, or nil
  /// for none. Parameters that do not fit (another count, not finite, a
  /// scale of 0 or less) throw a `WireError` naming `field`.
  public func normalizer(features: Int, field: String) throws -> Normalizer? {
    if offset.isEmpty, scale.isEmpty { return nil }
    guard offset.count == features, scale.count == features else {
      throw WireError(
        "\(field) has \(offset.count) offsets and \(scale.count) scales; the model's examples have \(features) "
          + "scalars: give one of each per scalar, or none")
    }
    guard offset.allSatisfy(\.isFinite), scale.allSatisfy({ $0.isFinite && $0 > 0 }) else {
      throw WireError("\(field): offsets must be finite and scales finite and above 0")
    }
    return Normalizer(offset: offset, scale: scale)
  }
}
