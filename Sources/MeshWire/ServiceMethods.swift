import MeshProto
import MeshRPC

// The methods of every service in protos/, typed (the standard gRPC ones,
// HealthMethods and ReflectionMethods, are MeshRPC's, which serves them).
// MeshWireTests check this table against the descriptor set, so a method
// added to a .proto file without an entry here fails the tests.

/// `pipemesh.v1.Diagnostics`, served by every Pipemesh process.
public enum DiagnosticsMethods {
  public static let service = "pipemesh.v1.Diagnostics"
  public static let echo = UnaryMethod<Pipemesh_V1_EchoRequest, Pipemesh_V1_EchoResponse>(
    service: service, name: "Echo")
  public static let echoStream = ServerStreamingMethod<Pipemesh_V1_EchoStreamRequest, Pipemesh_V1_EchoResponse>(
    service: service, name: "EchoStream")
  public static let describe = UnaryMethod<Pipemesh_V1_DescribeRequest, Pipemesh_V1_DescribeResponse>(
    service: service, name: "Describe")
}

/// `pipemesh.v1.ParameterServer`.
public enum ParameterServerMethods {
  public static let service = "pipemesh.v1.ParameterServer"
  public static let register = UnaryMethod<Pipemesh_V1_RegisterRequest, Pipemesh_V1_RegisterResponse>(
    service: service, name: "Register")
  public static let pull = UnaryMethod<Pipemesh_V1_PullRequest, Pipemesh_V1_PullResponse>(
    service: service, name: "Pull")
  public static let push = UnaryMethod<Pipemesh_V1_PushRequest, Pipemesh_V1_PushResponse>(
    service: service, name: "Push")
  public static let stats = UnaryMethod<Pipemesh_V1_StatsRequest, Pipemesh_V1_StatsResponse>(
    service: service, name: "Stats")
  public static let checkpoint = UnaryMethod<Pipemesh_V1_CheckpointRequest, Pipemesh_V1_CheckpointResponse>(
    service: service, name: "Checkpoint")
  public static let assign = UnaryMethod<Pipemesh_V1_AssignRequest, Pipemesh_V1_AssignResponse>(
    service: service, name: "Assign")
  public static let dropJob = UnaryMethod<Pipemesh_V1_DropJobRequest, Pipemesh_V1_DropJobResponse>(
    service: service, name: "DropJob")
  public static let restoreJob = UnaryMethod<Pipemesh_V1_RestoreJobRequest, Pipemesh_V1_RestoreJobResponse>(
    service: service, name: "RestoreJob")
}

/// `pipemesh.v1.Partition`.
public enum PartitionMethods {
  public static let service = "pipemesh.v1.Partition"
  public static let loadStage = UnaryMethod<Pipemesh_V1_LoadStageRequest, Pipemesh_V1_LoadStageResponse>(
    service: service, name: "LoadStage")
  public static let forward = UnaryMethod<Pipemesh_V1_ForwardRequest, Pipemesh_V1_ForwardResponse>(
    service: service, name: "Forward")
  public static let backward = UnaryMethod<Pipemesh_V1_BackwardRequest, Pipemesh_V1_BackwardResponse>(
    service: service, name: "Backward")
  public static let backwardWeights = UnaryMethod<
    Pipemesh_V1_BackwardWeightsRequest, Pipemesh_V1_BackwardWeightsResponse
  >(service: service, name: "BackwardWeights")
  public static let gradientNorm = UnaryMethod<Pipemesh_V1_GradientNormRequest, Pipemesh_V1_GradientNormResponse>(
    service: service, name: "GradientNorm")
  public static let commit = UnaryMethod<Pipemesh_V1_CommitRequest, Pipemesh_V1_CommitResponse>(
    service: service, name: "Commit")
  public static let infer = UnaryMethod<Pipemesh_V1_ForwardRequest, Pipemesh_V1_ForwardResponse>(
    service: service, name: "Infer")
  public static let fetchTensor = ServerStreamingMethod<Pipemesh_V1_FetchTensorRequest, Pipemesh_V1_TensorChunk>(
    service: service, name: "FetchTensor")
  public static let unloadStage = UnaryMethod<Pipemesh_V1_UnloadStageRequest, Pipemesh_V1_UnloadStageResponse>(
    service: service, name: "UnloadStage")
  public static let timeLayers = UnaryMethod<Pipemesh_V1_TimeLayersRequest, Pipemesh_V1_TimeLayersResponse>(
    service: service, name: "TimeLayers")
}

/// `pipemesh.v1.Coordinator`.
public enum CoordinatorMethods {
  public static let service = "pipemesh.v1.Coordinator"
  public static let plan = UnaryMethod<Pipemesh_V1_PlanRequest, Pipemesh_V1_PlanResponse>(
    service: service, name: "Plan")
  public static let train = ServerStreamingMethod<Pipemesh_V1_TrainRequest, Pipemesh_V1_TrainProgress>(
    service: service, name: "Train")
  public static let infer = UnaryMethod<Pipemesh_V1_InferRequest, Pipemesh_V1_InferResponse>(
    service: service, name: "Infer")
  public static let getJob = UnaryMethod<Pipemesh_V1_GetJobRequest, Pipemesh_V1_Job>(
    service: service, name: "GetJob")
  public static let listJobs = UnaryMethod<Pipemesh_V1_ListJobsRequest, Pipemesh_V1_ListJobsResponse>(
    service: service, name: "ListJobs")
  public static let cancelJob = UnaryMethod<Pipemesh_V1_CancelJobRequest, Pipemesh_V1_Job>(
    service: service, name: "CancelJob")
  public static let resumeJob = ServerStreamingMethod<Pipemesh_V1_ResumeJobRequest, Pipemesh_V1_TrainProgress>(
    service: service, name: "ResumeJob")
  public static let followJob = ServerStreamingMethod<Pipemesh_V1_FollowJobRequest, Pipemesh_V1_TrainProgress>(
    service: service, name: "FollowJob")
  public static let deleteJob = UnaryMethod<Pipemesh_V1_DeleteJobRequest, Pipemesh_V1_DeleteJobResponse>(
    service: service, name: "DeleteJob")
  public static let listModels = UnaryMethod<Pipemesh_V1_ListModelsRequest, Pipemesh_V1_ListModelsResponse>(
    service: service, name: "ListModels")
  public static let getModel = UnaryMethod<Pipemesh_V1_GetModelRequest, Pipemesh_V1_Model>(
    service: service, name: "GetModel")
  public static let deleteModel = UnaryMethod<Pipemesh_V1_DeleteModelRequest, Pipemesh_V1_DeleteModelResponse>(
    service: service, name: "DeleteModel")
  public static let exportModel = ServerStreamingMethod<Pipemesh_V1_ExportModelRequest, Pipemesh_V1_ModelChunk>(
    service: service, name: "ExportModel")
  public static let importModel = UnaryMethod<Pipemesh_V1_ImportModelRequest, Pipemesh_V1_Model>(
    service: service, name: "ImportModel")
  public static let uploadModel = ClientStreamingMethod<Pipemesh_V1_UploadModelRequest, Pipemesh_V1_Model>(
    service: service, name: "UploadModel")
  public static let solve = UnaryMethod<Pipemesh_V1_SolveRequest, Pipemesh_V1_SolveResponse>(
    service: service, name: "Solve")
  public static let joinPool = UnaryMethod<Pipemesh_V1_JoinPoolRequest, Pipemesh_V1_JoinPoolResponse>(
    service: service, name: "JoinPool")
  public static let leavePool = UnaryMethod<Pipemesh_V1_LeavePoolRequest, Pipemesh_V1_LeavePoolResponse>(
    service: service, name: "LeavePool")
  public static let getPool = UnaryMethod<Pipemesh_V1_GetPoolRequest, Pipemesh_V1_Pool>(
    service: service, name: "GetPool")
}

/// Every method in the tables above.
public let allServiceMethods: [RPCMethodDescription] = [
  HealthMethods.check.methodDescription, HealthMethods.watch.methodDescription,
  ReflectionMethods.info.methodDescription,
  DiagnosticsMethods.echo.methodDescription, DiagnosticsMethods.echoStream.methodDescription,
  DiagnosticsMethods.describe.methodDescription,
  ParameterServerMethods.register.methodDescription, ParameterServerMethods.pull.methodDescription,
  ParameterServerMethods.push.methodDescription, ParameterServerMethods.stats.methodDescription,
  ParameterServerMethods.checkpoint.methodDescription, ParameterServerMethods.assign.methodDescription,
  ParameterServerMethods.dropJob.methodDescription, ParameterServerMethods.restoreJob.methodDescription,
  PartitionMethods.loadStage.methodDescription, PartitionMethods.forward.methodDescription,
  PartitionMethods.backward.methodDescription,
  PartitionMethods.backwardWeights.methodDescription, PartitionMethods.gradientNorm.methodDescription,
  PartitionMethods.commit.methodDescription,
  PartitionMethods.infer.methodDescription, PartitionMethods.fetchTensor.methodDescription,
  PartitionMethods.unloadStage.methodDescription, PartitionMethods.timeLayers.methodDescription,
  CoordinatorMethods.plan.methodDescription, CoordinatorMethods.train.methodDescription,
  CoordinatorMethods.infer.methodDescription, CoordinatorMethods.getJob.methodDescription,
  CoordinatorMethods.listJobs.methodDescription, CoordinatorMethods.cancelJob.methodDescription,
  CoordinatorMethods.resumeJob.methodDescription, CoordinatorMethods.followJob.methodDescription,
  CoordinatorMethods.deleteJob.methodDescription,
  CoordinatorMethods.listModels.methodDescription,
  CoordinatorMethods.getModel.methodDescription, CoordinatorMethods.deleteModel.methodDescription,
  CoordinatorMethods.exportModel.methodDescription, CoordinatorMethods.importModel.methodDescription,
  CoordinatorMethods.uploadModel.methodDescription, CoordinatorMethods.solve.methodDescription,
  CoordinatorMethods.joinPool.methodDescription, CoordinatorMethods.leavePool.methodDescription,
  CoordinatorMethods.getPool.methodDescription,
]
